# The importer's readers meet Stripe's webhooks: the same fixture as the money tests.
from tests.subscriptions.conftest import stripe_webhooks

__all__ = ["stripe_webhooks"]
