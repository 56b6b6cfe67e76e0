"""Helpers for the Stripe tests: signed webhook deliveries (the `stripe_api` fixture is in
tests/conftest.py)."""

from __future__ import annotations

import json
import time
from typing import Any

import stripe  # only for the library's own webhook signing helper

WEBHOOK_SECRET = "whsec_test_broadside_0123456789"  # as set by the stripe_api fixture
WEBHOOK_URL = "/stripe/webhook/"


def signature_for(body: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(
        body, secret, timestamp=timestamp if timestamp is not None else int(time.time())
    )


def post_webhook(
    client,
    body: str | bytes,
    *,
    signature: str | None,
    capture_on_commit,
) -> Any:
    headers = {"HTTP_STRIPE_SIGNATURE": signature} if signature is not None else {}
    with capture_on_commit(execute=True):
        return client.post(WEBHOOK_URL, data=body, content_type="application/json", **headers)


def send_event(client, event: dict[str, Any], *, capture_on_commit) -> Any:
    """Deliver a correctly signed event, as Stripe would; returns the response."""
    body = json.dumps(event)
    return post_webhook(
        client, body, signature=signature_for(body), capture_on_commit=capture_on_commit
    )
