"""The one module that talks to Stripe's API (and the only importer of `stripe`).

Keys come from settings: STRIPE_SECRET_KEY for API calls, STRIPE_WEBHOOK_SECRET for
verifying webhooks. STRIPE_API_BASE, when set, points the client at a local stand-in
(stripe-mock, or the test suite's fake server) instead of api.stripe.com.

Every create carries an idempotency key derived from our own ids, so a retried request
(by the library on a network error, by a Celery retry, or by a double-clicked form)
creates one object, not two: https://docs.stripe.com/api/idempotent_requests
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import stripe
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

# How far a webhook's signed timestamp may lag behind our clock (Stripe's default).
WEBHOOK_TOLERANCE_SECONDS = 300


class StripeError(Exception):
    """Stripe could not be reached or refused the request."""


class StripeNotFound(StripeError):
    """The object asked for does not exist in this Stripe account (or was deleted)."""


class WebhookSignatureError(Exception):
    """The webhook's Stripe-Signature is missing, wrong or too old."""


@functools.cache
def _client(api_key: str, api_base: str) -> stripe.StripeClient:
    base_addresses: dict[str, str | None] = {}
    if api_base:
        base_addresses = {"api": api_base, "files": api_base, "connect": api_base}
    return stripe.StripeClient(
        api_key,
        base_addresses=base_addresses,  # type: ignore[arg-type]
        max_network_retries=2,
    )


def client() -> stripe.StripeClient:
    if not settings.STRIPE_SECRET_KEY:
        raise ImproperlyConfigured(
            "STRIPE_SECRET_KEY is not set. Set it (and STRIPE_WEBHOOK_SECRET) in the "
            "environment to take payments; see README, section Stripe."
        )
    return _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE)


def is_configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def check_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    """System check: Stripe's keys belong together and look like Stripe's keys."""
    found: list[checks.CheckMessage] = []
    secret, webhook = settings.STRIPE_SECRET_KEY, settings.STRIPE_WEBHOOK_SECRET
    if secret and not secret.startswith(("sk_", "rk_")):
        found.append(
            checks.Error(
                "STRIPE_SECRET_KEY does not look like a Stripe secret key.",
                hint="Copy the key starting with sk_live_ or sk_test_ from the Stripe dashboard.",
                id="subscriptions.E001",
            )
        )
    if secret and not webhook:
        found.append(
            checks.Error(
                "STRIPE_SECRET_KEY is set but STRIPE_WEBHOOK_SECRET is not: every webhook "
                "would be rejected and nobody would get paid access.",
                hint="Set STRIPE_WEBHOOK_SECRET to the endpoint's signing secret (whsec_...).",
                id="subscriptions.E002",
            )
        )
    if webhook and not webhook.startswith("whsec_"):
        found.append(
            checks.Error(
                "STRIPE_WEBHOOK_SECRET does not look like a webhook signing secret.",
                hint="Copy the signing secret (whsec_...) of the /stripe/webhook/ endpoint.",
                id="subscriptions.E003",
            )
        )
    if webhook and not secret:
        found.append(
            checks.Warning(
                "STRIPE_WEBHOOK_SECRET is set but STRIPE_SECRET_KEY is not: events are applied "
                "from their snapshots without re-reading Stripe, and nobody can start a payment.",
                hint="Set STRIPE_SECRET_KEY.",
                id="subscriptions.W001",
            )
        )
    return found


def _call(method: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        result = method(*args, **kwargs)
    except stripe.InvalidRequestError as exc:
        if exc.code == "resource_missing":
            raise StripeNotFound(str(exc.user_message or exc)) from exc
        raise StripeError(str(exc.user_message or exc)) from exc
    except stripe.StripeError as exc:
        raise StripeError(str(exc.user_message or exc)) from exc
    return to_dict(result)


def to_dict(obj: Any) -> Any:
    """A Stripe object as plain dicts and lists (safe to store, compare and pass on)."""
    if isinstance(obj, stripe.StripeObject):
        return obj.to_dict(recursive=True, for_json=True)
    if isinstance(obj, Mapping):
        return {key: to_dict(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [to_dict(value) for value in obj]
    return obj


def _options(idempotency_key: str | None) -> dict[str, Any]:
    return {"idempotency_key": idempotency_key} if idempotency_key else {}


# --- Webhooks --------------------------------------------------------------------------


def verify_webhook(*, payload: bytes, signature_header: str | None) -> None:
    """Check the Stripe-Signature header against the raw body; raise if it fails."""
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        raise WebhookSignatureError("STRIPE_WEBHOOK_SECRET is not set.")
    try:
        stripe.WebhookSignature.verify_header(
            payload.decode("utf-8"), signature_header, secret, WEBHOOK_TOLERANCE_SECONDS
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
        raise WebhookSignatureError(str(exc)) from exc


# --- Customers -------------------------------------------------------------------------


def create_customer(
    *, email: str, name: str = "", metadata: dict[str, str], idempotency_key: str
) -> dict[str, Any]:
    params: dict[str, Any] = {"email": email, "metadata": metadata}
    if name:
        params["name"] = name
    return _call(client().v1.customers.create, params, _options(idempotency_key))


def retrieve_customer(customer_id: str) -> dict[str, Any]:
    return _call(client().v1.customers.retrieve, customer_id)


def find_customer(customer_id: str) -> dict[str, Any] | None:
    """The customer, or None if there is no such customer (or it was deleted)."""
    try:
        customer = retrieve_customer(customer_id)
    except StripeNotFound:
        return None
    return None if customer.get("deleted") else customer


# --- Checkout and the Customer Portal --------------------------------------------------


def create_checkout_session(*, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    return _call(client().v1.checkout.sessions.create, params, _options(idempotency_key))


def retrieve_checkout_session(session_id: str) -> dict[str, Any]:
    return _call(client().v1.checkout.sessions.retrieve, session_id)


def create_portal_session(*, customer_id: str, return_url: str) -> dict[str, Any]:
    # A portal session is short-lived and creating two is harmless: no idempotency key,
    # so each click gets a fresh, unexpired link.
    return _call(
        client().v1.billing_portal.sessions.create,
        {"customer": customer_id, "return_url": return_url},
    )


# --- Subscriptions ---------------------------------------------------------------------


def retrieve_subscription(subscription_id: str) -> dict[str, Any]:
    # Discounts come as ids unless expanded; the revenue figures need their coupons.
    return _call(client().v1.subscriptions.retrieve, subscription_id, {"expand": ["discounts"]})


def update_subscription_quantity(
    *, subscription_id: str, item_id: str, quantity: int, idempotency_key: str
) -> dict[str, Any]:
    """Change the seats of a group subscription; Stripe prorates the difference."""
    return _call(
        client().v1.subscriptions.update,
        subscription_id,
        {
            "items": [{"id": item_id, "quantity": quantity}],
            "proration_behavior": "create_prorations",
        },
        _options(idempotency_key),
    )


def list_customer_subscriptions(customer_id: str) -> list[dict[str, Any]]:
    """Every subscription of the customer, ended ones included, through all pages."""
    params = {"customer": customer_id, "status": "all", "limit": 100}
    try:
        page = client().v1.subscriptions.list(params)  # type: ignore[arg-type]
        return [to_dict(subscription) for subscription in page.auto_paging_iter()]
    except stripe.InvalidRequestError as exc:
        if exc.code == "resource_missing":
            raise StripeNotFound(str(exc.user_message or exc)) from exc
        raise StripeError(str(exc.user_message or exc)) from exc
    except stripe.StripeError as exc:
        raise StripeError(str(exc.user_message or exc)) from exc


# --- Products and prices (plans) -------------------------------------------------------


def create_product(*, name: str, metadata: dict[str, str], idempotency_key: str) -> dict[str, Any]:
    return _call(
        client().v1.products.create,
        {"name": name, "metadata": metadata},
        _options(idempotency_key),
    )


def retrieve_product(product_id: str) -> dict[str, Any]:
    return _call(client().v1.products.retrieve, product_id)


def create_price(
    *,
    product_id: str,
    amount: int,
    currency: str,
    interval: str,
    metadata: dict[str, str],
    idempotency_key: str,
) -> dict[str, Any]:
    return _call(
        client().v1.prices.create,
        {
            "product": product_id,
            "unit_amount": amount,
            "currency": currency,
            "recurring": {"interval": interval},
            "metadata": metadata,
        },
        _options(idempotency_key),
    )


# --- Coupons and promotion codes (offers) ----------------------------------------------


def create_coupon(*, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    """https://docs.stripe.com/api/coupons/create"""
    return _call(client().v1.coupons.create, params, _options(idempotency_key))


def create_promotion_code(
    *,
    coupon_id: str,
    code: str,
    expires_at: int | None,
    max_redemptions: int | None,
    metadata: dict[str, str],
    idempotency_key: str,
) -> dict[str, Any]:
    """https://docs.stripe.com/api/promotion_codes/create"""
    params: dict[str, Any] = {
        "promotion": {"type": "coupon", "coupon": coupon_id},
        "code": code,
        "metadata": metadata,
    }
    if expires_at:
        params["expires_at"] = expires_at
    if max_redemptions:
        params["max_redemptions"] = max_redemptions
    return _call(client().v1.promotion_codes.create, params, _options(idempotency_key))


def retrieve_promotion_code(promotion_code_id: str) -> dict[str, Any]:
    return _call(client().v1.promotion_codes.retrieve, promotion_code_id)


def set_promotion_code_active(*, promotion_code_id: str, active: bool) -> dict[str, Any]:
    return _call(client().v1.promotion_codes.update, promotion_code_id, {"active": active})


def retrieve_price(price_id: str) -> dict[str, Any]:
    return _call(client().v1.prices.retrieve, price_id)
