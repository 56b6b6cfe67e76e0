"""Create the Stripe product and the prices missing for our plans (safe to re-run)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from subscriptions import stripe_client
from subscriptions.services.billing import sync_stripe_plans


class Command(BaseCommand):
    help = "Create the Stripe product and prices missing for the plans and store their ids."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = sync_stripe_plans()
        except (ImproperlyConfigured, stripe_client.StripeError) as exc:
            raise CommandError(str(exc)) from exc
        if not report:
            self.stdout.write("No plans yet: add them in the admin first.")
        for line in report:
            self.stdout.write(line)
