"""Free trials: the reminder before the first charge.

Checkout starts a trial (`billing.trial_days_for`: the plan's or an offer's days, one
trial per reader); the reader is paid while Stripe says `trialing`. Stripe sends
`customer.subscription.trial_will_end` three days before the trial ends, and the
webhook calls `send_trial_reminder`. How the trial ends (active, past_due or canceled)
arrives as an ordinary subscription update.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from publication.emails import send_email_on_commit
from subscriptions.models import Membership, Subscriber
from subscriptions.services.donations import format_amount
from subscriptions.services.tokens import absolute_url


def send_trial_reminder(*, membership: Membership, subscription: dict[str, Any]) -> bool:
    """Tell a trialing reader when they will first be charged, and how much; once per
    membership. Call inside the transaction that applied the subscription."""
    if membership.status != Membership.Status.TRIALING or membership.trial_end is None:
        return False
    subscriber = membership.subscriber
    if subscriber.status in (Subscriber.Status.BOUNCED, Subscriber.Status.COMPLAINED):
        return False
    claimed = Membership.objects.filter(
        pk=membership.pk, trial_reminder_sent_at__isnull=True
    ).update(trial_reminder_sent_at=timezone.now())
    if not claimed:
        return False
    amount = (membership.unit_amount or (membership.plan.amount if membership.plan else 0)) * (
        membership.quantity or 1
    )
    if membership.discount_percent_off:
        amount -= round(amount * membership.discount_percent_off / 100)
    elif membership.discount_amount_off:
        amount = max(amount - membership.discount_amount_off, 0)
    currency = membership.plan.currency if membership.plan else "usd"
    send_email_on_commit(
        to=subscriber.email,
        subject="Your free trial ends soon",
        template="trial_reminder",
        context={
            "subscriber": subscriber,
            "membership": membership,
            "amount": format_amount(amount, currency),
            "canceling": bool(subscription.get("cancel_at_period_end")),
            "billing_url": absolute_url("/account/billing/"),
        },
    )
    return True
