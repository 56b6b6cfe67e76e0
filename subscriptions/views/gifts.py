"""Gift subscriptions: buy one for someone (/gift/), and redeem one (/gift/redeem/...)."""

from __future__ import annotations

import re
import uuid
from datetime import date

from django import forms
from django.contrib import messages
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from subscriptions import stripe_client
from subscriptions.services import gifts
from subscriptions.services.addresses import InvalidAddress
from subscriptions.services.ratelimit import client_ip, consume, network_key

_ATTEMPT = re.compile(r"^[0-9a-f]{32}$")


class NameField(forms.CharField):
    """A person's name as one line: line breaks and control characters typed or pasted
    into it become spaces before it is checked, since it goes into email subjects."""

    def to_python(self, value: object) -> str:
        return gifts.single_line(super().to_python(value) or "")


class GiftForm(forms.Form):
    option = forms.ChoiceField(
        error_messages={"invalid_choice": "Please choose one of the gifts shown."}
    )
    recipient_email = forms.EmailField(max_length=254)
    recipient_name = NameField(required=False, max_length=200)
    buyer_email = forms.EmailField(max_length=254)
    buyer_name = NameField(required=False, max_length=200)
    message = forms.CharField(
        required=False,
        max_length=gifts.MESSAGE_MAX_LENGTH,
        error_messages={
            "max_length": f"Please keep the message under {gifts.MESSAGE_MAX_LENGTH} characters."
        },
    )
    deliver_on = forms.DateField(required=False)
    attempt = forms.CharField(required=False, max_length=32)

    def __init__(self, *args, options: list[gifts.GiftOption], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.options = options
        self.fields["option"].choices = [(o.key, o.label) for o in options]  # type: ignore[attr-defined]

    def clean_attempt(self) -> str:
        attempt = self.cleaned_data.get("attempt") or ""
        return attempt if _ATTEMPT.match(attempt) else uuid.uuid4().hex

    def clean_deliver_on(self) -> date:
        day = self.cleaned_data.get("deliver_on") or timezone.localdate()
        if day < timezone.localdate():
            raise forms.ValidationError("Choose today or a later day.")
        if day > timezone.localdate() + gifts.LATEST_DELIVERY:
            raise forms.ValidationError("Choose a day within a year.")
        return day


@require_http_methods(["GET", "POST"])
def gift_view(request: HttpRequest) -> HttpResponse:
    options = gifts.gift_options() if gifts.gifts_open() else []
    if request.method == "POST" and not options:
        # The page offers no form then (Stripe is off, or no plan can be given); a stale
        # form or a script gets the page saying so, not a 500 and no pending gift.
        return _render(request, GiftForm(options=options), status=503)
    if request.method == "POST":
        form = GiftForm(request.POST, options=options)
        if not consume(scope="gift", key=network_key(client_ip(request)), limit=20, period=600):
            form.is_valid()
            form.add_error(None, "Too many attempts. Please wait a few minutes.")
            return _render(request, form, status=429)
        if form.is_valid():
            data = form.cleaned_data
            try:
                checkout = gifts.start_gift_checkout(
                    option=gifts.option_for_key(data["option"]),
                    buyer_email=data["buyer_email"],
                    buyer_name=data.get("buyer_name") or "",
                    recipient_email=data["recipient_email"],
                    recipient_name=data.get("recipient_name") or "",
                    message=data.get("message") or "",
                    deliver_on=data["deliver_on"],
                    attempt=data["attempt"],
                )
            except InvalidAddress as exc:
                form.add_error(None, f"Please check the email addresses: {exc}.")
            except gifts.GiftError as exc:
                form.add_error(None, str(exc))
            else:
                response = HttpResponseRedirect(checkout.url)
                response.status_code = 303
                return response
        return _render(request, form, status=400)
    email = request.user.email if request.user.is_authenticated else ""
    form = GiftForm(
        options=options,
        initial={
            "attempt": uuid.uuid4().hex,
            "option": options[0].key if options else "",
            "buyer_email": email,
            "deliver_on": timezone.localdate(),
        },
    )
    return _render(request, form)


def _render(request: HttpRequest, form: GiftForm, status: int = 200) -> HttpResponse:
    chosen = str(form["option"].value() or "")
    return render(
        request,
        "subscriptions/gift.html",
        {
            "form": form,
            "options": [
                {"option": o, "selected": o.key == chosen or (not chosen and i == 0)}
                for i, o in enumerate(form.options)
            ],
            "attempt": form["attempt"].value() or uuid.uuid4().hex,
            "today": timezone.localdate().isoformat(),
            "stripe_open": stripe_client.is_configured(),
        },
        status=status,
    )


def gift_thanks_view(request: HttpRequest) -> HttpResponse:
    """Where Checkout returns to; the webhook records the payment."""
    return render(request, "subscriptions/gift_thanks.html", {})


@require_http_methods(["GET", "POST"])
def redeem_view(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows the gift and changes nothing (mail scanners follow links); POST redeems."""
    try:
        gift = gifts.gift_for_token(token=token)
    except gifts.GiftError as exc:
        return render(request, "subscriptions/gift_redeem.html", {"error": str(exc)}, status=404)
    if request.method == "POST":
        if not consume(
            scope="gift_redeem", key=network_key(client_ip(request)), limit=20, period=600
        ):
            return render(
                request,
                "subscriptions/gift_redeem.html",
                {"gift": gift, "error": "Too many attempts. Please wait a few minutes."},
                status=429,
            )
        try:
            redemption = gifts.redeem_gift(token=token)
        except gifts.GiftError as exc:
            return render(
                request,
                "subscriptions/gift_redeem.html",
                {"gift": gift, "error": str(exc)},
                status=409,
            )
        if not getattr(redemption.user, "is_staff", False):
            # The link reached this mailbox and works once; staff sign in with a code.
            login(request, redemption.user, backend="django.contrib.auth.backends.ModelBackend")
        membership = redemption.membership
        messages.success(
            request,
            f"Your gift is redeemed: paid access until {membership.expires_at:%-d %B %Y}."
            if membership.expires_at
            else "Your gift is redeemed.",
        )
        return redirect("/account/")
    return render(request, "subscriptions/gift_redeem.html", {"gift": gift})
