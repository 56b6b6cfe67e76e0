"""Helpers for the Stripe tests: signed webhook deliveries (the `stripe_api` fixture is in
tests/conftest.py, `stripe_webhooks` in tests/subscriptions/conftest.py)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import stripe  # only for the library's own webhook signing helper

from subscriptions.services import stripe_outbox

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
        response = client.post(WEBHOOK_URL, data=body, content_type="application/json", **headers)
        # What the workers' next poll does with the stored event.
        stripe_outbox.drain()
    return response


def send_event(client, event: dict[str, Any], *, capture_on_commit) -> Any:
    """Deliver a correctly signed event, as Stripe would; returns the response."""
    body = json.dumps(event)
    return post_webhook(
        client, body, signature=signature_for(body), capture_on_commit=capture_on_commit
    )


@dataclass
class StripeWebhooks:
    """Signed deliveries to the site's endpoint, with the on-commit work they queue run."""

    client: Any
    stripe_api: Any
    capture_on_commit: Any

    def post(self, body: str | bytes, *, signature: str | None) -> Any:
        """POST `body` with this Stripe-Signature header, or with none."""
        return post_webhook(
            self.client, body, signature=signature, capture_on_commit=self.capture_on_commit
        )

    def send(self, event: dict[str, Any]) -> Any:
        """Deliver this event (again, if it was sent before); returns the response."""
        return send_event(self.client, event, capture_on_commit=self.capture_on_commit)

    def deliver(self, event_type: str, obj: dict[str, Any], **event_options: Any) -> Any:
        """A new event of `event_type` about a snapshot of `obj`, delivered."""
        return self.send(self.stripe_api.event(event_type, obj, **event_options))
