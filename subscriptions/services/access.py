"""Whether a reader is paid, or a subscriber: the one place that decides it.

Readers and money only: which article such a reader may read is newsletter's
answer (`newsletter/services/access.py`), built on these.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from subscriptions import reader_cache
from subscriptions.models import Membership, Plan, Subscriber

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

# A reader whose card failed keeps access this long past the end of the paid period
# while Stripe retries the payment (Stripe's Smart Retries run for about two weeks).
# Stripe starts the next period when it bills for it, paid or not, so the paid period
# ended at the current period's start: https://docs.stripe.com/billing/subscriptions/overview
PAST_DUE_GRACE = timedelta(days=7)


def access_granting_memberships(*, now=None) -> QuerySet[Membership]:
    """Memberships that make their reader paid now.

    A Stripe subscription counts only on one of our plans' prices: one on any other
    price (a $1 Payment Link, another product) is recorded with `foreign_price` set and
    grants nothing.
    """
    now = now or timezone.now()
    return Membership.objects.filter(
        # A group's own subscription pays for its seats, not for its buyer: the buyer
        # reads by taking a seat like everyone else.
        _stripe_grants(now=now, prefix="") & ~Q(plan__kind=Plan.Kind.GROUP)
        | Q(kind=Membership.Kind.GROUP, status=Membership.Status.ACTIVE)
        & _stripe_grants(now=now, prefix="group__")
        & Q(group__plan__kind=Plan.Kind.GROUP)
        | Q(
            kind__in=[Membership.Kind.COMP, Membership.Kind.GIFT],
            status=Membership.Status.ACTIVE,
        )
        & (Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        & (Q(starts_at__isnull=True) | Q(starts_at__lte=now))
    )


def paid_for_stripe_memberships(*, now=None) -> QuerySet[Membership]:
    """Stripe subscriptions on our plans that are paid for now, group ones included
    (whether or not their seats are taken): what the revenue figures bill."""
    return Membership.objects.filter(_stripe_grants(now=now or timezone.now(), prefix=""))


def _stripe_grants(*, now, prefix: str) -> Q:
    """A Stripe subscription on one of our plans that is paid for (or in grace)."""

    def q(**lookups) -> Q:
        return Q(**{f"{prefix}{key}": value for key, value in lookups.items()})

    ours = q(kind=Membership.Kind.STRIPE, foreign_price=False)
    return ours & (
        q(status__in=["active", "trialing"])
        | q(status="past_due", current_period_start__gt=now - PAST_DUE_GRACE)
    )


def paid_subscribers(*, now=None) -> QuerySet[Subscriber]:
    return Subscriber.objects.filter(
        pk__in=access_granting_memberships(now=now).values("subscriber_id")
    )


def subscriber_is_paid(*, subscriber: Subscriber | None) -> bool:
    if subscriber is None or subscriber.pk is None:
        return False
    return access_granting_memberships().filter(subscriber=subscriber).exists()


def subscriber_is_paying(*, subscriber: Subscriber | None) -> bool:
    """Whether a Stripe subscription gives them access. Comp and gift readers are not
    paying: they may subscribe, e.g. before their membership ends."""
    if subscriber is None or subscriber.pk is None:
        return False
    return (
        access_granting_memberships()
        .filter(subscriber=subscriber, kind=Membership.Kind.STRIPE)
        .exists()
    )


def founding_member_user_ids(*, user_ids: set[int]) -> set[int]:
    """Which of these reader accounts are paid members on a founding plan now."""
    if not user_ids:
        return set()
    return set(
        access_granting_memberships()
        .filter(plan__kind=Plan.Kind.FOUNDING, subscriber__user_id__in=user_ids)
        .values_list("subscriber__user_id", flat=True)
    )


def subscriber_for_user(*, user: AbstractBaseUser | AnonymousUser | None) -> Subscriber | None:
    if user is None or not user.is_authenticated:
        return None
    return Subscriber.objects.filter(user_id=user.pk).first()


# Within one request (`remembered_for_one_request`), a reader's access is looked up once,
# though the article, its discussion and the layout each ask.
_paid_this_request: ContextVar[dict[int, bool] | None] = ContextVar(
    "paid_this_request", default=None
)


@contextmanager
def remembered_for_one_request() -> Iterator[None]:
    token = _paid_this_request.set({})
    try:
        yield
    finally:
        _paid_this_request.reset(token)


def user_is_paid(*, user: AbstractBaseUser | AnonymousUser | None) -> bool:
    if user is None or not user.is_authenticated or user.pk is None:
        return False
    memo = _paid_this_request.get()
    if memo is None:
        return _user_is_paid(user_pk=user.pk)
    if user.pk not in memo:
        # The signed-in reader's own status comes with their record, read with their
        # User row (`reader_cache`); anyone else's is asked of the database.
        remembered = reader_cache.remembered_paid(user_id=user.pk)
        memo[user.pk] = _user_is_paid(user_pk=user.pk) if remembered is None else remembered
    return memo[user.pk]


def _user_is_paid(*, user_pk: Any) -> bool:
    """One query: a membership granting access, of the subscriber linked to this user."""
    return access_granting_memberships().filter(subscriber__user_id=user_pk).exists()


def paid_status(*, user_pk: Any, now: datetime) -> tuple[bool, datetime | None]:
    """Whether this user is paid at `now`, and the first moment after it at which the
    rule could answer otherwise with no row changed (None: never), for a cached answer
    (`subscriptions.reader_cache`) to be used only until then."""
    paid = access_granting_memberships(now=now).filter(subscriber__user_id=user_pk).exists()
    # Each moment at which one of the rule's comparisons with `now` turns: a comp or
    # gift's expiry and start, the end of a past-due grace (the seat's group's too).
    moments: list[datetime] = []
    rows = Membership.objects.filter(subscriber__user_id=user_pk).values_list(
        "expires_at", "starts_at", "current_period_start", "group__current_period_start"
    )
    for expires_at, starts_at, period_start, group_period_start in rows:
        moments += [m for m in (expires_at, starts_at) if m is not None]
        moments += [p + PAST_DUE_GRACE for p in (period_start, group_period_start) if p]
    return paid, min((m for m in moments if m > now), default=None)
