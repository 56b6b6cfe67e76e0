"""Reader accounts: the User behind a subscriber, the account page's changes, erasure.

A confirmed subscriber gets a User with a verified address at confirmation; an
imported one at their first sign-in (`subscriptions.adapters` asks for it before the
code is sent), so both sign in by emailed code at once. `subscriptions.adapters` also
links accounts that readers create themselves.
"""

from __future__ import annotations

import secrets
from typing import Any

from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, models, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from newsletter.models import Comment, CommentBan, Delivery
from newsletter.services.comments import erase_comments_of
from newsletter.services.tracking import erase_engagement_of, export_engagement_of
from subscriptions.models import Donation, Membership, StripeEvent, Subscriber
from subscriptions.services.access import subscriber_is_paid
from subscriptions.services.addresses import normalized_or_none, suppress, unsuppress
from subscriptions.services.unsubscribe import unsubscribe_subscriber

# Stripe statuses after which a subscription will not bill again.
_ENDED_STRIPE_STATUSES = [Membership.Status.CANCELED, Membership.Status.INCOMPLETE_EXPIRED]


class AccountError(Exception):
    """The account change cannot be made; the message says why, for the reader."""


def new_username() -> str:
    # Readers sign in by email; the username only has to be unique.
    return f"reader-{secrets.token_hex(8)}"


def _user_for_email(email: str) -> Any | None:
    """An existing user who owns this address and has no subscriber of their own.

    Owning means a verified address, or a user made outside allauth (in the admin) with
    this email. Never an allauth signup still waiting for verification: anyone can
    start one for any address, and adopting it would hand the reader's access to
    whoever started it (account pre-hijacking).
    """
    User = get_user_model()
    free = Q(subscriber__isnull=True)
    verified = EmailAddress.objects.filter(email=email, verified=True).values("user_id")
    return (
        User.objects.filter(free & Q(pk__in=verified)).first()
        or User.objects.filter(free & Q(email=email))
        .exclude(Exists(EmailAddress.objects.filter(user_id=OuterRef("pk"))))
        .order_by("pk")
        .first()
    )


def _ensure_verified_address(*, user: Any, email: str, verified: bool = True) -> None:
    """The account's allauth address; `verified=False` leaves proving it to the code."""
    address = EmailAddress.objects.filter(user=user, email=email).first()
    if address is None:
        try:
            with transaction.atomic():
                EmailAddress.objects.create(
                    user=user,
                    email=email,
                    verified=verified,
                    primary=not EmailAddress.objects.filter(user=user, primary=True).exists(),
                )
        except IntegrityError:
            # Another account already holds this address verified; leave it with them.
            return
    elif verified and not address.verified:
        address.verified = True
        address.save(update_fields=["verified"])


def ensure_reader_account(*, subscriber: Subscriber, verified: bool = True) -> Any:
    """The subscriber's User, created (or found by address) and linked if need be.

    `verified=False` for an address nobody has proved yet (a pending subscriber asking
    for a sign-in code): the account's address stays unverified until the code is
    entered, and no other account is adopted for it.
    """
    if subscriber.user_id:
        if verified:  # e.g. confirmed by the emailed link after asking for a code
            _ensure_verified_address(user=subscriber.user, email=subscriber.email)
        return subscriber.user
    with transaction.atomic():
        user = _user_for_email(subscriber.email) if verified else None
        if user is None:
            User = get_user_model()
            user = User(username=new_username(), email=subscriber.email)
            user.set_unusable_password()
            user.save()
        _ensure_verified_address(user=user, email=subscriber.email, verified=verified)
        subscriber.user = user
        subscriber.save(update_fields=["user", "updated_at"])
    return user


def prepare_sign_in(*, email: str) -> None:
    """Before a sign-in code is sent: a subscriber without an account gets one.

    Confirmed and imported subscribers get a verified address. A pending one (who
    signed up, or started a payment, without confirming yet) gets an account whose
    address allauth verifies when the code is entered: the code proves the mailbox, and
    a reader whose address a stranger typed at /upgrade/ can still sign in and pay.
    """
    email = normalized_or_none(email) or ""
    subscriber = Subscriber.objects.filter(email=email, user__isnull=True).first()
    if subscriber is not None:
        ensure_reader_account(
            subscriber=subscriber, verified=subscriber.status != Subscriber.Status.PENDING
        )


def link_reader_account(
    *, user: AbstractBaseUser, email: str, signup: bool = False, ip: str | None = None
) -> Subscriber | None:
    """Tie a signed-in reader to the subscriber with their (verified) address.

    On signup (`signup=True`, the address just verified) a reader without a subscriber
    becomes one, as on Ghost and Substack; they can turn the newsletter off on /account/.
    """
    own = Subscriber.objects.filter(user_id=user.pk).first()
    if own is not None:
        return own
    normalized = normalized_or_none(email)
    if normalized is None:
        return None
    email = normalized
    with transaction.atomic():
        subscriber = Subscriber.objects.select_for_update().filter(email=email).first()
        now = timezone.now()
        if subscriber is None:
            if not signup:
                return None
            subscriber = Subscriber.objects.create(
                email=email,
                status=Subscriber.Status.ACTIVE,
                consent_at=now,
                consent_ip=ip,
                consent_source="account signup",
                confirmed_at=now,
                user=user,  # type: ignore[misc]
            )
            unsuppress(email=email)
            return subscriber
        if subscriber.user_id is None:
            subscriber.user = user  # type: ignore[assignment]
            fields = ["user", "updated_at"]
            if signup and subscriber.status == Subscriber.Status.PENDING:
                # The verified account address is the opt-in the pending link asked for.
                subscriber.status = Subscriber.Status.ACTIVE
                subscriber.confirmed_at = now
                fields += ["status", "confirmed_at"]
            subscriber.save(update_fields=fields)
    return subscriber


def subscriber_for_account(*, user: AbstractBaseUser) -> Subscriber | None:
    return Subscriber.objects.filter(user_id=user.pk).first()


def set_newsletter_subscription(
    *, user: AbstractBaseUser, enabled: bool, ip: str | None = None
) -> Subscriber:
    """Turn the newsletter on or off from the signed-in account page."""
    subscriber = subscriber_for_account(user=user)
    if subscriber is None:
        email = getattr(user, "email", "")
        if not email:
            raise AccountError("Your account has no email address.")
        subscriber = link_reader_account(user=user, email=email, signup=True, ip=ip)
        assert subscriber is not None
    if not enabled:
        unsubscribe_subscriber(subscriber=subscriber, reason="turned off on the account page")
        subscriber.refresh_from_db()
        return subscriber
    if subscriber.status != Subscriber.Status.ACTIVE:
        # Signed in through a verified address: that is the confirmation.
        now = timezone.now()
        Subscriber.objects.filter(pk=subscriber.pk).update(
            status=Subscriber.Status.ACTIVE,
            status_reason="turned on on the account page",
            consent_at=now,
            consent_ip=ip,
            consent_source="account page",
            confirmed_at=now,
            unsubscribed_at=None,
            updated_at=now,
        )
        unsuppress(email=subscriber.email)
        subscriber.refresh_from_db()
    return subscriber


def set_tracking_opt_out(*, user: AbstractBaseUser, opted_out: bool) -> Subscriber:
    """The reader's choice whether their emails count opens and clicks (the account page)."""
    subscriber = subscriber_for_account(user=user)
    if subscriber is None:
        raise AccountError("This account has no newsletter subscription.")
    Subscriber.objects.filter(pk=subscriber.pk).update(
        tracking_opt_out=opted_out, updated_at=timezone.now()
    )
    subscriber.refresh_from_db()
    return subscriber


def _row(obj: models.Model, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        field.attname: getattr(obj, field.attname)
        for field in obj._meta.concrete_fields
        if field.attname not in exclude
    }


def _owned_addresses(*, user: AbstractBaseUser, subscriber: Subscriber | None) -> set[str]:
    """The addresses this reader has proved are theirs.

    Not every address on the account: allauth lets a reader add any address, which
    stays unverified until its owner follows the link, and it must not reach that
    owner's donations or suppress their mail.
    """
    emails = set(
        EmailAddress.objects.filter(user_id=user.pk, verified=True).values_list("email", flat=True)
    )
    if subscriber is not None:
        emails.add(subscriber.email)
    return emails


def _donations_of(*, emails: set[str], subscriber: Subscriber | None) -> QuerySet[Donation]:
    match = Q(subscriber=subscriber) if subscriber is not None else Q(pk__in=[])
    for email in emails:
        match |= Q(email=email)
    return Donation.objects.filter(match)


def export_reader_data(*, user: AbstractBaseUser) -> dict[str, Any]:
    """Everything stored about this reader, for the account page's JSON download."""
    subscriber = subscriber_for_account(user=user)
    emails = _owned_addresses(user=user, subscriber=subscriber)
    data: dict[str, Any] = {
        "exported_at": timezone.now(),
        "account": _row(user, exclude=("password",)),
        "email_addresses": [_row(a) for a in EmailAddress.objects.filter(user_id=user.pk)],
        "subscriber": _row(subscriber) if subscriber else None,
        "paid": subscriber_is_paid(subscriber=subscriber),
        "memberships": [],
        "deliveries": [],
        "donations": [_row(d) for d in _donations_of(emails=emails, subscriber=subscriber)],
        "comments": [_row(c) for c in Comment.objects.filter(user_id=user.pk)],
        "comment_ban": next(
            (
                _row(b, exclude=("banned_by_id",))
                for b in CommentBan.objects.filter(user_id=user.pk)
            ),
            None,
        ),
    }
    if subscriber is not None:
        data["memberships"] = [_row(m) for m in subscriber.memberships.all()]
        data["deliveries"] = [
            {**_row(d), "article_title": d.send.article.title}
            for d in Delivery.objects.filter(subscriber=subscriber).select_related("send__article")
        ]
        data["engagement"] = export_engagement_of(subscriber=subscriber)
    return data


def delete_reader_account(*, user: AbstractBaseUser) -> None:
    """Erase the reader's personal data, keeping only a hashed suppression entry.

    Donations stay as anonymous bookkeeping records (amount, currency, date), and
    Stripe events as ledger entries without their payloads.
    """
    if getattr(user, "is_staff", False):
        raise AccountError(
            "Editors' accounts are managed in the admin; ask an administrator to remove yours."
        )
    subscriber = subscriber_for_account(user=user)
    if (
        subscriber is not None
        and subscriber.memberships.filter(kind=Membership.Kind.STRIPE)
        .exclude(status__in=_ENDED_STRIPE_STATUSES)
        .exists()
    ):
        raise AccountError(
            "You have a paid subscription that still renews. Cancel it under Billing "
            "(/account/billing/) first, then delete your account."
        )
    emails = _owned_addresses(user=user, subscriber=subscriber)
    with transaction.atomic():
        for email in emails:
            suppress(email=email, reason="account deleted")
        _donations_of(emails=emails, subscriber=subscriber).update(
            email="", message="", subscriber=None
        )
        _redact_stripe_events(
            terms=[*emails, subscriber.stripe_customer_id if subscriber else None]
        )
        erase_comments_of(user=user)
        if subscriber is not None:
            erase_engagement_of(subscriber=subscriber)
            subscriber.delete()
        user.delete()


def _redact_stripe_events(*, terms: list[str | None]) -> None:
    """Blank the stored payloads of applied Stripe events that carry the reader's details.

    Checkout sessions, customers and invoices carry the address, name and postal
    address. The row stays as the ledger entry that keeps the event from being applied
    twice; an event not yet applied keeps its payload until it is.
    """
    match = Q(pk__in=[])
    for term in filter(None, terms):
        # Quoted, as in the payload's JSON text: a whole value, not part of a longer one.
        match |= Q(payload__icontains=f'"{term}"')
    StripeEvent.objects.filter(match, processed_at__isnull=False).update(
        payload={"redacted": "the reader deleted their account"}
    )
