"""Group subscriptions: one Stripe subscription with a quantity of seats, one reader each.

The buyer pays through Checkout (`billing.start_plan_checkout` with `seats`) and manages
the group at /account/group/: `invite_to_group` emails a signed link, `join_group`
turns it into a group-seat membership, `remove_from_group` ends one. A seat grants
access while the group's own membership does (`access.access_granting_memberships`),
so when Stripe ends the subscription every seat ends with it; `billing.change_group_seats`
changes the quantity in Stripe.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core import signing
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from publication.emails import send_email_on_commit
from subscriptions.models import GroupInvite, Membership, Plan, Subscriber
from subscriptions.services.accounts import ensure_reader_account
from subscriptions.services.addresses import clean_address
from subscriptions.services.memberships import confirm_paying_subscriber, find_or_create_subscriber
from subscriptions.services.tokens import absolute_url

INVITE_SALT = "broadside.subscriptions.group-invite"
INVITE_MAX_AGE = 60 * 60 * 24 * 30  # a month
# A group's own membership is live (it can take members) in these Stripe states.
LIVE_STATUSES = (
    Membership.Status.ACTIVE,
    Membership.Status.TRIALING,
    Membership.Status.PAST_DUE,
)


class GroupError(Exception):
    """Something the buyer or the invited reader should be told."""


@dataclass(frozen=True)
class Joined:
    invite: GroupInvite
    seat: Membership
    subscriber: Subscriber
    user: Any
    # True only for the request that took the seat: the link signs in that once.
    first_time: bool = False


def groups_of(*, subscriber: Subscriber | None) -> QuerySet[Membership]:
    """The group subscriptions this reader bought (live or not)."""
    if subscriber is None:
        return Membership.objects.none()
    return Membership.objects.filter(
        subscriber=subscriber, kind=Membership.Kind.STRIPE, plan__kind=Plan.Kind.GROUP
    ).select_related("plan")


def seats_taken(*, group: Membership) -> int:
    return group.invites.filter(removed_at__isnull=True).count()


def invite_to_group(*, group: Membership, email: str, now: datetime | None = None) -> GroupInvite:
    """Offer a seat to an address and email it a link. Raises InvalidAddress or GroupError."""
    now = now or timezone.now()
    address = clean_address(email)
    with transaction.atomic():
        locked = Membership.objects.select_for_update().get(pk=group.pk)
        if locked.status not in LIVE_STATUSES:
            raise GroupError("This group subscription has ended; renew it to invite readers.")
        if seats_taken(group=locked) >= locked.quantity:
            raise GroupError(
                f"All {locked.quantity} seats are taken. Add seats, or remove someone first."
            )
        try:
            with transaction.atomic():
                invite = GroupInvite.objects.create(group=locked, email=address)
        except IntegrityError as exc:
            raise GroupError(f"{address} is already invited.") from exc
        publication_buyer = locked.subscriber
        send_email_on_commit(
            to=address,
            subject="You are invited to a group subscription",
            template="group_invite",
            context={
                "invite": invite,
                "buyer": publication_buyer,
                "join_url": absolute_url(f"/account/group/join/{invite_token(invite=invite)}/"),
            },
        )
    return invite


def invite_token(*, invite: GroupInvite) -> str:
    return signing.dumps({"i": invite.pk, "e": invite.email}, salt=INVITE_SALT)


def invite_for_token(*, token: str) -> GroupInvite:
    try:
        data = signing.loads(token, salt=INVITE_SALT, max_age=INVITE_MAX_AGE)
        invite = GroupInvite.objects.select_related("group", "group__plan").filter(
            pk=int(data["i"]), email=str(data["e"])
        )
    except signing.SignatureExpired as exc:
        raise GroupError("This invitation has expired; ask for a new one.") from exc
    except (signing.BadSignature, KeyError, TypeError, ValueError) as exc:
        raise GroupError("This invitation link is not valid.") from exc
    found = invite.first()
    if found is None:
        raise GroupError("This invitation link is not valid.")
    return found


def join_group(*, token: str, now: datetime | None = None) -> Joined:
    """Take the invited seat: the reader (made if need be, with an account) gets a
    group-seat membership. Joining twice is the same seat (`first_time` is False then,
    so the link is a login once only); a removed invite is refused."""
    now = now or timezone.now()
    found = invite_for_token(token=token)
    with transaction.atomic():
        group = Membership.objects.select_for_update().get(pk=found.group_id)
        invite = GroupInvite.objects.select_for_update().get(pk=found.pk)
        if invite.removed_at is not None:
            raise GroupError("This invitation was withdrawn.")
        if group.status not in LIVE_STATUSES:
            raise GroupError("This group subscription has ended.")
        subscriber = find_or_create_subscriber(
            email=invite.email,
            status=Subscriber.Status.ACTIVE,
            consent_at=now,
            consent_source="group invite",
            confirmed_at=now,
        )
        confirm_paying_subscriber(subscriber=subscriber, source="group invite")
        user = ensure_reader_account(subscriber=subscriber)
        seat = invite.seat
        first_time = seat is None
        if seat is None:
            seat = Membership.objects.create(
                subscriber=subscriber,
                plan=group.plan,
                kind=Membership.Kind.GROUP,
                status=Membership.Status.ACTIVE,
                group=group,
            )
            invite.seat = seat
            invite.accepted_at = now
            invite.save(update_fields=["seat", "accepted_at"])
    return Joined(invite=invite, seat=seat, subscriber=subscriber, user=user, first_time=first_time)


def remove_from_group(
    *, group: Membership, invite_id: int, now: datetime | None = None
) -> GroupInvite:
    """Withdraw an invitation or end a member's seat; the seat is free again."""
    now = now or timezone.now()
    with transaction.atomic():
        invite = (
            GroupInvite.objects.select_for_update()
            .filter(pk=invite_id, group=group, removed_at__isnull=True)
            .first()
        )
        if invite is None:
            raise GroupError("That reader is not in this group.")
        invite.removed_at = now
        invite.save(update_fields=["removed_at"])
        if invite.seat_id is not None:
            Membership.objects.filter(pk=invite.seat_id, status=Membership.Status.ACTIVE).update(
                status=Membership.Status.CANCELED, canceled_at=now, updated_at=now
            )
    return invite
