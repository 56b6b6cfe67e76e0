"""Which paid plans are on offer, and whether a reader can pay for one now.

Read by the upgrade page, the paywall and the site's navigation (through the context
processor), the newsletter emails and the membership reminders, so that no page or
email offers an upgrade that leads nowhere; and by the system check that tells an
operator when Stripe is set up but no plan can be bought.
"""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.db import DatabaseError
from django.db.models import QuerySet

from subscriptions import stripe_client
from subscriptions.models import Plan


def active_plans() -> QuerySet[Plan]:
    """The plans a reader can check out: active, with a Stripe price."""
    return Plan.objects.filter(active=True, stripe_price_id__isnull=False).exclude(
        stripe_price_id=""
    )


def listed_plans() -> QuerySet[Plan]:
    """The plans the upgrade page lists: active ones, priced in Stripe or not yet."""
    return Plan.objects.filter(active=True)


def upgrades_open() -> bool:
    """A reader can pay for a plan now: Stripe is configured and a plan has a price."""
    return stripe_client.is_configured() and active_plans().exists()


def missing_offer() -> str:
    """Why readers cannot upgrade although Stripe is set up, or "" when they can (or
    when Stripe is off, which every page already says)."""
    if not stripe_client.is_configured() or active_plans().exists():
        return ""
    if listed_plans().exists():
        return (
            "Stripe is configured, but no active plan has a Stripe price, so /upgrade/ "
            "offers nothing to buy. Run `manage.py sync_stripe_plans` (or the Plans list's "
            "action) to create the prices."
        )
    return (
        "Stripe is configured, but there is no active plan, so /upgrade/ offers nothing "
        "to buy. Add one under Readers and money → Plans, then run "
        "`manage.py sync_stripe_plans`."
    )


def check_offer(**kwargs: Any) -> list[checks.CheckMessage]:
    """System check (database tag: run by `migrate` and `check --database default`)."""
    if not kwargs.get("databases"):
        return []
    try:
        problem = missing_offer()
    except DatabaseError:  # not migrated yet
        return []
    return [checks.Warning(problem, id="subscriptions.W020")] if problem else []
