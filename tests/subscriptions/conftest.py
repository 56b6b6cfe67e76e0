"""Fixtures for the subscription tests."""

from __future__ import annotations

import pytest

from tests.subscriptions.stripe_support import StripeWebhooks


@pytest.fixture
def stripe_webhooks(client, stripe_api, django_capture_on_commit_callbacks) -> StripeWebhooks:
    """Stripe's webhook deliveries to the site, signed as Stripe signs them."""
    return StripeWebhooks(client, stripe_api, django_capture_on_commit_callbacks)
