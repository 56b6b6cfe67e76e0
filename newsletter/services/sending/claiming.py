"""Claiming: a worker takes a chunk of due deliveries, re-checking each reader.

`claim_chunk` is called by `send_chunk` at the start of every chunk; `database_now` and
`due_deliveries` by everything that compares claim and retry times.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection as db_connection
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from newsletter.models import Article, Delivery, EmailSend
from subscriptions.models import Subscriber
from subscriptions.services.access import paid_subscribers


@dataclass(frozen=True)
class Claim:
    """One worker's claim on a chunk: its token says whose the rows are."""

    token: int
    at: datetime


@dataclass(frozen=True)
class _Claimed:
    pk: int
    segment: str
    subscriber_id: int
    email: str
    name: str
    tracking_opt_out: bool = False


def claim_chunk(
    *, email_send_id: int, size: int | None = None, now: datetime | None = None
) -> tuple[Claim, list[_Claimed], int]:
    """Claim up to `size` due pending deliveries of a sending send.

    Returns the claim (its token and time; the lease runs EMAIL_CLAIM_TIMEOUT from
    then), the claimed deliveries of readers still active, and how many were skipped
    because the reader is not. A reader whose paid access ended since publishing gets
    the free readers' email (or nothing, when the send is for paid readers only).
    """
    size = size or settings.EMAIL_SEND_CHUNK_SIZE
    now = now or database_now()
    claim = Claim(token=secrets.randbits(63), at=now)
    # On SQLite the transaction takes the write lock at BEGIN (transaction_mode
    # IMMEDIATE in settings), which stands in for SKIP LOCKED: claims run one at a time.
    with transaction.atomic():
        audience = (
            EmailSend.objects.filter(pk=email_send_id, status=EmailSend.Status.SENDING)
            .values_list("audience", flat=True)
            .first()
        )
        if audience is None:
            return claim, [], 0
        ids = list(
            due_deliveries(email_send_id=email_send_id, now=now)
            .select_for_update(skip_locked=True)
            .order_by("id")
            .values_list("id", flat=True)[:size]
        )
        if not ids:
            return claim, [], 0
        rows = list(
            Delivery.objects.filter(pk__in=ids)
            .order_by("pk")  # oldest first (a sequential scan reads them in storage order)
            .values_list(
                "pk",
                "segment",
                "subscriber_id",
                "subscriber__email",
                "subscriber__name",
                "subscriber__status",
                "subscriber__tracking_opt_out",
            )
        )
        skipped: dict[str, list[int]] = {}
        for pk, _, _, _, _, status, _ in rows:
            if status != Subscriber.Status.ACTIVE:
                skipped.setdefault(f"The reader is {status}.", []).append(pk)
        active = [r for r in rows if r[5] == Subscriber.Status.ACTIVE]
        paid_ids = {r[2] for r in active if r[1] == Delivery.Segment.PAID}
        lapsed = paid_ids - set(
            paid_subscribers(now=now).filter(pk__in=paid_ids).values_list("pk", flat=True)
        )
        if lapsed:
            lapsed_pks = [r[0] for r in active if r[2] in lapsed]
            if audience == Article.EmailAudience.PAID:
                skipped["The reader no longer has paid access."] = lapsed_pks
                active = [r for r in active if r[2] not in lapsed]
            else:
                Delivery.objects.filter(pk__in=lapsed_pks).update(segment=Delivery.Segment.FREE)
                active = [
                    (r[0], Delivery.Segment.FREE.value, *r[2:]) if r[2] in lapsed else r
                    for r in active
                ]
        Delivery.objects.filter(pk__in=[r[0] for r in active]).update(
            status=Delivery.Status.CLAIMED,
            claimed_at=now,
            claim_token=claim.token,
            lease_expires_at=now + claim_timeout(),
            attempts=F("attempts") + 1,
        )
        for reason, pks in skipped.items():
            Delivery.objects.filter(pk__in=pks).update(
                status=Delivery.Status.SKIPPED, last_error=reason
            )
        EmailSend.objects.filter(pk=email_send_id).update(last_activity_at=now)
    claimed = [
        _Claimed(
            pk=r[0],
            segment=r[1],
            subscriber_id=r[2],
            email=r[3],
            name=r[4],
            tracking_opt_out=r[6],
        )
        for r in active
    ]
    return claim, claimed, sum(len(pks) for pks in skipped.values())


def claim_timeout() -> timedelta:
    """How long a claim lives without its worker renewing it."""
    return timedelta(seconds=settings.EMAIL_CLAIM_TIMEOUT)


def database_now() -> datetime:
    """The database server's clock, for claims and retry times.

    Workers on many machines compare each other's claim times (the sweeper decides a
    claim is stale); a machine whose clock runs behind would otherwise have its claims
    swept while it still sends them.
    """
    if db_connection.vendor != "postgresql":
        return timezone.now()
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        row = cursor.fetchone()
    return row[0]


def due_deliveries(*, email_send_id: int, now: datetime) -> QuerySet[Delivery]:
    """Pending deliveries of a send whose retry, if any, has come due."""
    return Delivery.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
        send_id=email_send_id,
        status=Delivery.Status.PENDING,
    )
