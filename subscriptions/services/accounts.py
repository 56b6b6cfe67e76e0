"""Reader accounts: the User behind a subscriber, the account page's changes, export and
erasure (through `subscriptions.reader_data`, which every app fills with its part).

A confirmed subscriber gets a User with a verified address at confirmation; an
imported one at their first sign-in (`subscriptions.adapters` asks for it before the
code is sent), so both sign in by emailed code at once. `subscriptions.adapters` also
links accounts that readers create themselves.
"""

from __future__ import annotations

import secrets
from importlib import import_module
from typing import Any

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.sessions.backends.db import SessionStore as DBSessionStore
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from subscriptions import stripe_client
from subscriptions.models import Donation, Gift, GroupInvite, Membership, StripeEvent, Subscriber
from subscriptions.reader_data import (
    Reader,
    erase_reader_parts,
    export_reader_parts,
    register_reader_data,
    row,
)
from subscriptions.services.access import subscriber_is_paid
from subscriptions.services.addresses import normalized_or_none, suppress, unsuppress
from subscriptions.services.donations import monthly_donation_still_bills
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


def _unfinished_signups() -> QuerySet[EmailAddress]:
    """The addresses of accounts that signed up and never proved one (nor have a
    subscriber): not an unproved address on an account that has a proved one (one an
    editor typed in the admin, say), whose owner is someone else."""
    proved = EmailAddress.objects.filter(user_id=OuterRef("user_id"), verified=True)
    return EmailAddress.objects.filter(verified=False, user__subscriber__isnull=True).exclude(
        Exists(proved)
    )


def prepare_sign_in(*, email: str) -> None:
    """Before a sign-in code is sent: a subscriber without an account gets one.

    Confirmed and imported subscribers get a verified address. A pending one (who
    signed up, or started a payment, without confirming yet) gets an account whose
    address allauth verifies when the code is entered: the code proves the mailbox, and
    a reader whose address a stranger typed at /upgrade/ can still sign in and pay.

    Unless an account signup for the address is waiting for its code: then the sign-in
    code goes to that account, which signing in links to the pending subscriber
    (`link_reader_account`); a second account would take the subscriber and leave the
    reader signed in without it. The subscriber stays pending: whoever started that
    signup may not own the address, so it is no opt-in, and signing in is none either.
    """
    email = normalized_or_none(email) or ""
    subscriber = Subscriber.objects.filter(email=email, user__isnull=True).first()
    if subscriber is None:
        return
    if subscriber.status != Subscriber.Status.PENDING:
        ensure_reader_account(subscriber=subscriber)
    elif not _unfinished_signups().filter(email=email).exists():
        ensure_reader_account(subscriber=subscriber, verified=False)


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


def reader_of(*, user: AbstractBaseUser) -> Reader:
    subscriber = subscriber_for_account(user=user)
    names = {
        user.get_username(),
        user.get_full_name() if hasattr(user, "get_full_name") else "",
        subscriber.name if subscriber else "",
    }
    return Reader(
        user=user,
        subscriber=subscriber,
        emails=frozenset(_owned_addresses(user=user, subscriber=subscriber)),
        names=frozenset(name.strip() for name in names if name.strip()),
    )


def export_reader_data(*, user: AbstractBaseUser) -> dict[str, Any]:
    """Everything stored about this reader, for the account page's JSON download: each
    app's part (`subscriptions.reader_data`)."""
    return {"exported_at": timezone.now(), **export_reader_parts(reader=reader_of(user=user))}


def delete_reader_account(*, user: AbstractBaseUser) -> None:
    """Erase the reader's personal data, keeping only a hashed suppression entry.

    Each app erases its own part (`subscriptions.reader_data`); then the subscriber and
    the account go. Donations stay as anonymous bookkeeping records (amount, currency,
    date), and Stripe events as ledger entries without their payloads.
    """
    if getattr(user, "is_staff", False):
        raise AccountError(
            "Editors' accounts are managed in the admin; ask an administrator to remove yours."
        )
    reader = reader_of(user=user)
    subscriber = reader.subscriber
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
    try:
        donating = monthly_donation_still_bills(
            donations=_donations_of(emails=set(reader.emails), subscriber=subscriber)
        )
    except stripe_client.StripeError as exc:
        raise AccountError(
            "We could not check your monthly donation with our payment provider just now. "
            "Please try again in a few minutes."
        ) from exc
    if donating:
        # Erased, its next invoice would still be charged, to a donor nobody can find.
        raise AccountError(
            "You have a monthly donation that still renews. Stop it with Manage billing "
            "under Billing (/account/billing/), which opens Stripe's billing portal, "
            "then delete your account."
        )
    with transaction.atomic():
        erase_reader_parts(reader=reader)
        if subscriber is not None:
            subscriber.delete()
        user.delete()


# --- The parts of a reader's data that are subscriptions' own -----------------------------


def _export_account(reader: Reader) -> dict[str, Any]:
    return row(reader.user, exclude=("password",))


def _end_sessions(reader: Reader) -> None:
    """Sign the reader out everywhere: their sessions on other devices hold their user
    id until they expire. Sessions are found by decoding the unexpired ones (Django keeps
    no index by user; an erasure is rare enough for the scan), and deleted through the
    session engine, so cached_db's cache copy goes with the row."""
    engine = import_module(settings.SESSION_ENGINE)
    if not issubclass(engine.SessionStore, DBSessionStore):
        return  # signed cookies: nothing stored on our side
    model = engine.SessionStore.get_model_class()
    user_id = str(reader.user.pk)
    sessions = model.objects.filter(expire_date__gt=timezone.now())
    for session in sessions.iterator(chunk_size=500):
        if session.get_decoded().get(SESSION_KEY) == user_id:
            engine.SessionStore(session_key=session.session_key).delete()


def _export_email_addresses(reader: Reader) -> list[dict[str, Any]]:
    return [row(a) for a in EmailAddress.objects.filter(user_id=reader.user.pk)]


def _export_subscriber(reader: Reader) -> dict[str, Any] | None:
    return row(reader.subscriber) if reader.subscriber else None


def _suppress_addresses(reader: Reader) -> None:
    for email in reader.emails:
        suppress(email=email, reason="account deleted")


def _export_paid(reader: Reader) -> bool:
    return subscriber_is_paid(subscriber=reader.subscriber)


def _export_memberships(reader: Reader) -> list[dict[str, Any]]:
    if reader.subscriber is None:
        return []
    return [row(m) for m in reader.subscriber.memberships.all()]


def _export_donations(reader: Reader) -> list[dict[str, Any]]:
    return [row(d) for d in _donations_of(emails=set(reader.emails), subscriber=reader.subscriber)]


def _anonymise_donations(reader: Reader) -> None:
    _donations_of(emails=set(reader.emails), subscriber=reader.subscriber).update(
        email="", message="", subscriber=None
    )


def _export_gifts(reader: Reader) -> dict[str, list[dict[str, Any]]]:
    return {
        "given": [row(g) for g in Gift.objects.filter(buyer_email__in=reader.emails)],
        "received": [row(g) for g in Gift.objects.filter(recipient_email__in=reader.emails)],
    }


def _anonymise_gifts(reader: Reader) -> None:
    """A gift stays as the buyer's bookkeeping record; the reader's side of it goes (and
    the message, which they wrote or received). A redeemed gift loses its membership
    with the subscriber, as its constraint allows once the recipient is blank."""
    Gift.objects.filter(buyer_email__in=reader.emails).update(
        buyer_email="", buyer_name="", message=""
    )
    Gift.objects.filter(recipient_email__in=reader.emails).update(
        recipient_email="", recipient_name="", message=""
    )


def _export_group_invites(reader: Reader) -> list[dict[str, Any]]:
    return [row(i) for i in GroupInvite.objects.filter(email__in=reader.emails)]


def _delete_group_invites(reader: Reader) -> None:
    """Invites to the reader's addresses; the seat they took goes with the subscriber."""
    GroupInvite.objects.filter(email__in=reader.emails).delete()


def _redact_reader_stripe_events(reader: Reader) -> None:
    customer = reader.subscriber.stripe_customer_id if reader.subscriber else None
    _redact_stripe_events(terms=[*reader.emails, customer])


def register_reader_data_parts() -> None:
    """Subscriptions' parts of a reader's data (SubscriptionsConfig.ready)."""
    User = get_user_model()
    register_reader_data(
        name="account",
        models=[
            User._meta.label,
            User.groups.through._meta.label,
            User.user_permissions.through._meta.label,
            "admin.LogEntry",
            "sessions.Session",  # by the user id in the session data
            "mfa.Authenticator",  # two-factor keys: erased with the account, never exported
        ],
        # The account's own rows go with it (cascade); the admin's history of it and of
        # every other row of the reader's goes through the hook (erase_reader_parts).
        export=_export_account,
        erase=_end_sessions,
    )
    register_reader_data(
        name="email_addresses", models=["account.EmailAddress"], export=_export_email_addresses
    )
    register_reader_data(
        name="subscriber",
        # The suppression entry is a hash of the address: it keeps it from being mailed.
        models=["subscriptions.Subscriber", "subscriptions.Suppression"],
        export=_export_subscriber,
        erase=_suppress_addresses,
    )
    register_reader_data(name="paid", models=[], export=_export_paid)
    register_reader_data(
        name="memberships", models=["subscriptions.Membership"], export=_export_memberships
    )
    register_reader_data(
        name="donations",
        models=["subscriptions.Donation"],
        export=_export_donations,
        erase=_anonymise_donations,
    )
    register_reader_data(
        name="gifts", models=["subscriptions.Gift"], export=_export_gifts, erase=_anonymise_gifts
    )
    register_reader_data(
        name="group_invites",
        models=["subscriptions.GroupInvite"],
        export=_export_group_invites,
        erase=_delete_group_invites,
    )
    # Stripe's payloads are Stripe's record, available from Stripe; not exported.
    register_reader_data(
        name="stripe_events",
        models=["subscriptions.StripeEvent"],
        erase=_redact_reader_stripe_events,
    )


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
    # The object id goes too (cus_…, the customer); only events not yet applied are
    # ordered by it (stripe_outbox.claim_batch), and those keep everything until applied.
    StripeEvent.objects.filter(match, processed_at__isnull=False).update(
        payload={"redacted": "the reader deleted their account"}, object_id=""
    )
