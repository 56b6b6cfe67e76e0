"""Donations: preset or custom amount, once or monthly, an optional message."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal, InvalidOperation

from django import forms
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.http import require_http_methods

from subscriptions import stripe_client
from subscriptions.forms import AddressField, RefField
from subscriptions.services import donations
from subscriptions.services.accounts import subscriber_for_account
from subscriptions.services.attribution import source_for_ref
from subscriptions.services.ratelimit import client_ip, consume, network_key

_ATTEMPT = re.compile(r"^[0-9a-f]{32}$")


class DonationForm(forms.Form):
    amount = forms.ChoiceField(required=False, widget=forms.RadioSelect)
    custom_amount = forms.CharField(required=False, max_length=12)
    frequency = forms.ChoiceField(
        choices=[("once", "Once"), ("monthly", "Monthly")],
        initial="once",
        widget=forms.RadioSelect,
    )
    email = AddressField(required=False)
    message = forms.CharField(
        required=False,
        max_length=donations.MESSAGE_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={
            "max_length": f"Please keep your message under {donations.MESSAGE_MAX_LENGTH} "
            "characters."
        },
    )
    attempt = forms.CharField(required=False, max_length=32, widget=forms.HiddenInput)
    # The article the donor came from (`?ref=` on the link); one naming none is ignored.
    ref = RefField()

    def __init__(self, *args, currency: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.fields["amount"].choices = [  # type: ignore[attr-defined]
            (str(cents), donations.format_amount(cents, currency))
            for cents in donations.PRESET_AMOUNTS
        ] + [("custom", "Other amount")]

    def clean_attempt(self) -> str:
        attempt = self.cleaned_data.get("attempt") or ""
        return attempt if _ATTEMPT.match(attempt) else uuid.uuid4().hex

    def clean(self) -> dict:
        data = super().clean() or {}
        choice = data.get("amount") or ""
        custom = (data.get("custom_amount") or "").strip().replace(",", "")
        # A typed amount wins over the preselected preset (no script ticks "Other").
        if choice and choice != "custom" and not custom:
            data["cents"] = int(choice)
            return data
        if not custom:
            self.add_error("custom_amount", "Choose an amount, or enter your own.")
            return data
        try:
            value = Decimal(custom.lstrip("$€£"))
            # quantize raises too, on an exponent beyond the context ("1e999999999").
            exact = value.is_finite() and value == value.quantize(Decimal("0.01"))
        except InvalidOperation:
            self.add_error("custom_amount", "Enter the amount as a number, like 15 or 12.50.")
            return data
        if not exact:
            self.add_error("custom_amount", "Enter the amount with at most two decimals.")
            return data
        cents = int(value * 100)
        try:
            donations.validate_amount(cents)
        except donations.DonationError as exc:
            self.add_error("custom_amount", str(exc))
            return data
        data["cents"] = cents
        return data


@require_http_methods(["GET", "POST"])
def donate_view(request: HttpRequest) -> HttpResponse:
    if not stripe_client.is_configured():
        # Without Stripe the page offers the publication's other ways to give, if any.
        return render(request, "subscriptions/billing/donate.html", {"payments_open": False})
    currency = donations.donation_currency()
    subscriber = (
        subscriber_for_account(user=request.user) if request.user.is_authenticated else None
    )
    if request.method == "POST":
        form = DonationForm(request.POST, currency=currency)
        if not consume(scope="donate", key=network_key(client_ip(request)), limit=20, period=600):
            form.is_valid()
            form.add_error(None, "Too many attempts. Please wait a few minutes.")
            return _render(request, form, status=429)
        if form.is_valid():
            try:
                checkout = donations.start_donation_checkout(
                    amount=form.cleaned_data["cents"],
                    recurring=form.cleaned_data["frequency"] == "monthly",
                    message=form.cleaned_data.get("message") or "",
                    email=form.cleaned_data.get("email") or "",
                    subscriber=subscriber,
                    attempt=form.cleaned_data["attempt"],
                    source_article_id=source_for_ref(form.cleaned_data.get("ref")),
                )
            except donations.DonationError as exc:
                form.add_error(None, str(exc))
            else:
                response = HttpResponseRedirect(checkout.url)
                response.status_code = 303
                return response
        return _render(request, form, status=400)
    form = DonationForm(
        currency=currency,
        initial={
            "attempt": uuid.uuid4().hex,
            "amount": str(donations.PRESET_AMOUNTS[1]),
            "frequency": "monthly" if request.GET.get("monthly") else "once",
            "ref": ref if source_for_ref(ref := request.GET.get("ref", "")) else "",
        },
    )
    return _render(request, form)


def _render(request: HttpRequest, form: DonationForm, status: int = 200) -> HttpResponse:
    return render(
        request,
        "subscriptions/billing/donate.html",
        {
            "payments_open": True,
            "form": form,
            "attempt": form["attempt"].value() or uuid.uuid4().hex,
            "min_amount": donations.format_amount(donations.MIN_AMOUNT, form.currency),
            "max_amount": donations.format_amount(donations.MAX_AMOUNT, form.currency),
        },
        status=status,
    )


def donate_thanks_view(request: HttpRequest) -> HttpResponse:
    """Where Checkout returns to after a donation; the webhook records it."""
    return render(request, "subscriptions/billing/donate_thanks.html", {})
