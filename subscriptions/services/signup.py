"""Free signup with double opt-in: subscribe, confirm, welcome.

The response to a signup never depends on whether the address is new, pending or
already active, so the form cannot be used to find out who subscribes: not in its
text, and not in its timing either, so the emails go out from a worker
(`subscriptions.tasks`), never while the request waits on the mail server.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from config import queue
from publication.emails import send_transactional_email
from subscriptions.models import Subscriber
from subscriptions.services.accounts import ensure_reader_account
from subscriptions.services.addresses import clean_address, normalized_or_none, unsuppress
from subscriptions.services.tokens import (
    CONFIRMATION_MAX_AGE,
    InvalidToken,
    confirmation_url,
    read_confirmation_source,
    read_confirmation_token,
    unsubscribe_url,
)

# The same address gets at most one confirmation email per this long.
CONFIRMATION_RESEND_INTERVAL = timedelta(minutes=5)
SEND_CONFIRMATION_EMAIL = queue.task_name("subscriptions.tasks.send_confirmation_email")
SEND_WELCOME_EMAIL = queue.task_name("subscriptions.tasks.send_welcome_email")

# A complained address reported us as spam: never mail it again, not even to confirm.
_NO_CONFIRMATION = {Subscriber.Status.ACTIVE, Subscriber.Status.COMPLAINED}


@dataclass(frozen=True)
class SignupResult:
    subscriber: Subscriber
    confirmation_sent: bool


def subscribe(
    *,
    email: str,
    ip: str | None,
    source: str,
    name: str = "",
    source_article_id: int | None = None,
) -> SignupResult:
    """Record a signup and send one confirmation email if one is due.

    `source_article_id` is the article the signup came from (resolved by
    `attribution.source_for_ref`); the last confirmed signup that names one is credited.
    A new address is credited at once (it counts only once confirmed); for an address
    we already have, the source travels in the confirmation link and is applied when
    the link is followed, so posting someone's address moves no credit.

    Raises InvalidAddress for an address we cannot email.
    """
    email = clean_address(email)
    now = timezone.now()
    with transaction.atomic():
        subscriber = Subscriber.objects.select_for_update().filter(email=email).first()
        pending_source = source_article_id if subscriber is not None else None
        if subscriber is None:
            try:
                with transaction.atomic():
                    subscriber = Subscriber.objects.create(
                        email=email,
                        name=name[:200],
                        status=Subscriber.Status.PENDING,
                        source_article_id=source_article_id,
                    )
            except IntegrityError:  # the same address signed up at the same moment
                subscriber = Subscriber.objects.select_for_update().get(email=email)
        if subscriber.status in _NO_CONFIRMATION:
            return SignupResult(subscriber=subscriber, confirmation_sent=False)
        last = subscriber.confirmation_sent_at
        if last is not None and now - last < CONFIRMATION_RESEND_INTERVAL:
            return SignupResult(subscriber=subscriber, confirmation_sent=False)
        # An unsubscribed or bounced reader opting in again starts over as pending.
        subscriber.status = Subscriber.Status.PENDING
        subscriber.consent_at = now
        subscriber.consent_ip = ip
        subscriber.consent_source = source[:500]
        subscriber.confirmation_sent_at = now
        if name and not subscriber.name:
            subscriber.name = name[:200]
        subscriber.save()
        # robust: the signup is stored either way; a broker that is down is logged.
        # A lambda, not a partial: Django logs a robust callback's failure by its
        # __qualname__, which a partial lacks, so the failure would escape after all.
        task_args = (subscriber.pk,) if pending_source is None else (subscriber.pk, pending_source)
        transaction.on_commit(
            lambda: queue.enqueue(SEND_CONFIRMATION_EMAIL, *task_args), robust=True
        )
    return SignupResult(subscriber=subscriber, confirmation_sent=True)


def send_confirmation_email(*, subscriber_id: int, source_article_id: int | None = None) -> bool:
    """Email the confirmation link, if the subscriber is still waiting for one; the link
    carries the source of a returning reader's signup (`subscribe`)."""
    subscriber = Subscriber.objects.filter(
        pk=subscriber_id, status=Subscriber.Status.PENDING
    ).first()
    if subscriber is None:
        return False
    send_transactional_email(
        to=subscriber.email,
        subject="Confirm your subscription",
        template="confirm",
        context={
            "confirm_url": confirmation_url(
                subscriber_id=subscriber.pk,
                email=subscriber.email,
                source_article_id=source_article_id,
            ),
            "expires_in_days": CONFIRMATION_MAX_AGE // 86400,
        },
    )
    return True


def send_welcome_email(*, subscriber_id: int) -> bool:
    """Welcome a confirmed subscriber who is still on the list."""
    subscriber = Subscriber.objects.filter(
        pk=subscriber_id, status=Subscriber.Status.ACTIVE
    ).first()
    if subscriber is None:
        return False
    send_transactional_email(
        to=subscriber.email,
        subject="Welcome aboard",
        template="welcome",
        context={
            "email": subscriber.email,
            "unsubscribe_url": unsubscribe_url(subscriber_id=subscriber.pk),
        },
    )
    return True


def confirm_subscriber(*, token: str) -> Subscriber:
    """Activate the pending subscriber the link was sent to. Idempotent; raises InvalidToken."""
    subscriber_id, email = read_confirmation_token(token=token)
    source_article_id = read_confirmation_source(token=token)
    with transaction.atomic():
        subscriber = (
            Subscriber.objects.select_for_update()
            .filter(pk=subscriber_id, email=normalized_or_none(email) or "")
            .first()
        )
        if subscriber is None:
            raise InvalidToken("This confirmation link is no longer valid.")
        if subscriber.status == Subscriber.Status.ACTIVE:
            return subscriber
        if subscriber.status != Subscriber.Status.PENDING:
            # The link outlives an unsubscribe, a bounce or a complaint: following it
            # (or a mail scanner fetching it) must not put the address back on the list.
            raise InvalidToken(
                "This confirmation link is no longer valid: the address left the list since."
            )
        now = timezone.now()
        subscriber.status = Subscriber.Status.ACTIVE
        subscriber.status_reason = "confirmed by email"
        subscriber.confirmed_at = now
        subscriber.unsubscribed_at = None
        if source_article_id is not None:
            subscriber.source_article_id = source_article_id
        subscriber.save()
        unsuppress(email=subscriber.email)
        ensure_reader_account(subscriber=subscriber)
        transaction.on_commit(lambda: queue.enqueue(SEND_WELCOME_EMAIL, subscriber.pk), robust=True)
    return subscriber
