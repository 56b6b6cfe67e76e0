"""Upgrade to a paid plan (Stripe Checkout) and manage billing (Stripe Customer Portal)."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods

from subscriptions import stripe_client
from subscriptions.forms import RefField
from subscriptions.models import Offer, Plan, Subscriber
from subscriptions.services import billing, gifts, offers
from subscriptions.services.access import subscriber_is_paid, subscriber_is_paying
from subscriptions.services.accounts import subscriber_for_account
from subscriptions.services.addresses import InvalidAddress
from subscriptions.services.attribution import source_for_ref
from subscriptions.services.donations import format_amount
from subscriptions.services.plans import listed_plans
from subscriptions.services.ratelimit import client_ip, consume, network_key

_ATTEMPT = re.compile(r"^[0-9a-f]{32}$")


class UpgradeForm(forms.Form):
    plan = forms.ModelChoiceField(
        queryset=Plan.objects.none(),
        empty_label=None,
        error_messages={"invalid_choice": "Please choose one of the plans shown."},
    )
    email = forms.EmailField(required=False, max_length=254)
    attempt = forms.CharField(required=False, max_length=32, widget=forms.HiddenInput)
    offer = forms.CharField(required=False, max_length=40, widget=forms.HiddenInput)
    seats = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=billing.MAX_SEATS,
        error_messages={"max_value": f"A group has at most {billing.MAX_SEATS} seats."},
    )
    founding_amount = forms.CharField(required=False, max_length=12)
    # The article the reader came from (`?ref=` on the link); one naming none is ignored.
    ref = RefField()

    def __init__(self, *args, signed_in: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.signed_in = signed_in
        self.fields["plan"].queryset = billing.active_plans()  # type: ignore[attr-defined]
        if not signed_in:
            self.fields["email"].required = True
            self.fields["email"].error_messages["required"] = (
                "Enter your email address: it is where your paid articles will go."
            )

    def clean_attempt(self) -> str:
        attempt = self.cleaned_data.get("attempt") or ""
        return attempt if _ATTEMPT.match(attempt) else uuid.uuid4().hex

    def clean_founding_amount(self) -> int | None:
        typed = (self.cleaned_data.get("founding_amount") or "").strip().replace(",", "")
        if not typed:
            return None
        try:
            value = Decimal(typed.lstrip("$€£"))
            exact = value.is_finite() and value == value.quantize(Decimal("0.01"))
        except InvalidOperation:
            raise forms.ValidationError("Enter the amount as a number, like 250.") from None
        if not exact:
            raise forms.ValidationError("Enter the amount with at most two decimals.")
        # Zero or less is below the plan's minimum, which clean() names.
        return int(value * 100)

    def clean(self) -> dict:
        data = super().clean() or {}
        plan = data.get("plan")
        amount = data.get("founding_amount")
        founding = plan is not None and plan.kind == Plan.Kind.FOUNDING
        if founding and plan is not None and amount is not None and amount < plan.amount:
            self.add_error(
                "founding_amount",
                f"The founding membership is at least "
                f"{format_amount(plan.amount, plan.currency)} a year.",
            )
        if plan is not None and plan.kind == Plan.Kind.GROUP and not data.get("seats"):
            self.add_error("seats", "Say how many seats the group needs.")
        return data


def _offer_from(code: str, plan: Plan | None = None) -> tuple[Offer | None, str]:
    """The offer a link names and, if it cannot be used, why not."""
    if not code:
        return None, ""
    try:
        return offers.offer_for_code(code=code, plan=plan), ""
    except offers.OfferError as exc:
        return None, str(exc)


def _checkout_redirect(url: str) -> HttpResponseRedirect:
    # 303 See Other: the browser follows a POST's answer with a GET to Stripe.
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


@require_http_methods(["GET", "POST"])
def upgrade_view(request: HttpRequest) -> HttpResponse:
    signed_in = request.user.is_authenticated
    subscriber = subscriber_for_account(user=request.user) if signed_in else None  # type: ignore[arg-type]
    if request.method == "POST" and not stripe_client.is_configured():
        # The page offers no form then; a stale one or a script gets the page, not a 500.
        form = UpgradeForm(signed_in=signed_in)
        return render(
            request, "subscriptions/billing/upgrade.html", _context(form, subscriber), status=503
        )
    if request.method == "POST":
        form = UpgradeForm(request.POST, signed_in=signed_in)
        if not consume(scope="upgrade", key=network_key(client_ip(request)), limit=20, period=600):
            messages.error(request, "Too many attempts. Please wait a few minutes.")
            return render(
                request,
                "subscriptions/billing/upgrade.html",
                _context(form, subscriber),
                status=429,
            )
        # The plan is checked against the offer when the checkout starts.
        offer, offer_error = _offer_from(request.POST.get("offer", "")[:40])
        if offer_error:
            form.is_valid()
            form.add_error(None, offer_error)
        if not offer_error and form.is_valid():
            source_article_id = source_for_ref(form.cleaned_data.get("ref"))
            try:
                reader = billing.subscriber_for_checkout(
                    email=form.cleaned_data.get("email") or "",
                    user=request.user,
                    source_article_id=source_article_id,
                )
                checkout = billing.start_plan_checkout(
                    plan=form.cleaned_data["plan"],
                    subscriber=reader,
                    # Only a sign-in proves the visitor is this reader. (A browser that
                    # merely started a checkout for an address once proves nothing.)
                    trusted=signed_in,
                    attempt=form.cleaned_data["attempt"],
                    offer=offer,
                    seats=form.cleaned_data.get("seats") or 1,
                    amount=form.cleaned_data.get("founding_amount"),
                    source_article_id=source_article_id,
                )
            except InvalidAddress as exc:
                form.add_error("email", f"Please check your email address: {exc}.")
            except billing.SignInRequired as exc:
                messages.info(request, str(exc))
                login = reverse("account_login")
                return redirect(f"{login}?{urlencode({'next': '/upgrade/'})}")
            except billing.AlreadyPaid as exc:
                messages.info(request, str(exc))
                return redirect("/account/")
            except offers.OfferError as exc:
                form.add_error(None, str(exc))
            except (billing.BillingError, stripe_client.StripeError) as exc:
                form.add_error(None, f"We could not start the payment: {exc}")
            else:
                return _checkout_redirect(checkout.url)
        return render(
            request,
            "subscriptions/billing/upgrade.html",
            _context(form, subscriber, offer=offer),
            status=400,
        )
    code = request.GET.get("offer", "")[:40]
    offer, offer_error = _offer_from(code)
    ref = request.GET.get("ref", "")
    form = UpgradeForm(
        signed_in=signed_in,
        initial={
            "attempt": uuid.uuid4().hex,
            "plan": request.GET.get("plan") or (offer.plan_id if offer else None),
            "offer": offer.code if offer else "",
            "seats": 3,
            # Carried on only when it names an article: nothing else typed into the
            # link enters the page.
            "ref": ref if source_for_ref(ref) else "",
        },
    )
    return render(
        request,
        "subscriptions/billing/upgrade.html",
        _context(form, subscriber, offer=offer, offer_error=offer_error),
        status=200,
    )


def _sign_in_url(form: UpgradeForm) -> str:
    """Sign in, then back to this upgrade with its article and offer (the ref only when
    it names an article, as on the form)."""
    ref = str(form["ref"].value() or "")
    back = {"ref": ref if source_for_ref(ref) else "", "offer": str(form["offer"].value() or "")}
    query = urlencode({key: value for key, value in back.items() if value})
    return "/accounts/login/?" + urlencode({"next": f"/upgrade/?{query}" if query else "/upgrade/"})


def _context(
    form: UpgradeForm,
    subscriber: Subscriber | None,
    *,
    offer: Offer | None = None,
    offer_error: str = "",
) -> dict[str, Any]:
    chosen = str(form["plan"].value() or "")
    plans = list(billing.active_plans())
    if offer is not None:
        plans = [plan for plan in plans if offers.offer_applies(offer=offer, plan=plan)]
    options = []
    for index, plan in enumerate(plans):
        trial_days = (
            billing.trial_days_for(subscriber=subscriber, plan=plan, offer=offer)
            if subscriber is not None
            else (offer.trial_days if offer and offer.kind == Offer.Kind.TRIAL else 0)
            or plan.trial_days
        )
        options.append(
            {
                "plan": plan,
                "price": format_amount(plan.amount, plan.currency),
                "selected": chosen == str(plan.pk) or (not chosen and index == 0),
                "offer_price": (
                    offers.describe(offer=offer, amount=plan.amount, currency=plan.currency)
                    if offer is not None
                    else ""
                ),
                "trial_days": trial_days,
                "founding": plan.kind == Plan.Kind.FOUNDING,
                "group": plan.kind == Plan.Kind.GROUP,
            }
        )
    return {
        "form": form,
        "sign_in_url": _sign_in_url(form),
        "checkout_open": stripe_client.is_configured(),
        "gifts_open": gifts.gifts_open(),
        # Without Stripe the plans are shown, priced, with no way to pay yet.
        "listed_plans": [
            {"plan": plan, "price": format_amount(plan.amount, plan.currency)}
            for plan in listed_plans()
        ],
        "plan_options": options,
        "offer": offer,
        "offer_error": offer_error,
        "has_founding": any(o["founding"] for o in options),
        "has_group": any(o["group"] for o in options),
        "is_paid": subscriber_is_paying(subscriber=subscriber),
        "attempt": form["attempt"].value() or uuid.uuid4().hex,
    }


def upgrade_success_view(request: HttpRequest) -> HttpResponse:
    """Where Checkout returns to. It only reports; the webhook grants access."""
    session_id = request.GET.get("session_id", "")
    status = (
        billing.checkout_status(session_id=session_id)
        if session_id.startswith("cs_")
        and stripe_client.is_configured()
        # Each look-up is a call to Stripe's API: a client reloading or scripting this
        # page must not use up the account's API rate limit that webhooks rely on.
        and consume(
            scope="upgrade_success", key=network_key(client_ip(request)), limit=20, period=600
        )
        else "unknown"
    )
    return render(request, "subscriptions/billing/upgrade_success.html", {"status": status})


@login_required
@require_http_methods(["GET", "POST"])
def billing_view(request: HttpRequest) -> HttpResponse:
    """GET shows the billing page; POST opens a Stripe Customer Portal session."""
    subscriber = subscriber_for_account(user=request.user)  # type: ignore[arg-type]
    if request.method == "POST":
        if subscriber is None or not subscriber.stripe_customer_id:
            messages.info(request, "There is no billing account for you yet: choose a plan.")
            return redirect("/upgrade/")
        try:
            url = billing.open_billing_portal(subscriber=subscriber)
        except (billing.BillingError, stripe_client.StripeError) as exc:
            messages.error(request, f"We could not open the billing portal: {exc}")
            return redirect("/account/billing/")
        return _checkout_redirect(url)
    memberships = subscriber.memberships.select_related("plan") if subscriber else []
    donations = subscriber.donations.exclude(status="pending")[:20] if subscriber else []
    return render(
        request,
        "subscriptions/billing/billing.html",
        {
            "subscriber": subscriber,
            "is_paid": subscriber_is_paid(subscriber=subscriber),
            "memberships": memberships,
            "donations": donations,
            "has_billing": bool(subscriber and subscriber.stripe_customer_id),
        },
    )
