"""The sweeper (periodic, in beat): expired claims back to pending, stalled sends restarted."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q

from newsletter.models import Delivery, EmailSend
from newsletter.services.sending.claiming import database_now, due_deliveries
from newsletter.services.sending.sends import (
    ACTIVE_SEND_STATUSES,
    _chains_for,
    _queue_chunks,
    finish_send_if_done,
    start_send,
)


@dataclass
class SweepResult:
    released: int = 0
    restarted: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)


def sweep_email_sends(*, now: datetime | None = None) -> SweepResult:
    """Periodic: return expired claims to pending and restart stalled sends.

    A claim expires when its worker stopped renewing it (kill -9, a lost machine):
    EMAIL_CLAIM_TIMEOUT after the last renewal its deliveries go back to pending, still
    carrying the token, so a late mark from that worker still counts until another
    worker claims them. A send with due pending deliveries and no chunk in flight (its
    chain ended after a crash or a mail-server outage, or retries came due) gets its
    chains restarted. Extra chains are harmless: claims never overlap.
    """
    now = now or database_now()
    result = SweepResult()
    # Claimed rows without a lease come from before leases existed.
    expired = Q(status=Delivery.Status.CLAIMED) & (
        Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True)
    )
    idle_before = now - timedelta(seconds=settings.EMAIL_SWEEP_INTERVAL)
    # A cancelled send's rows that a worker handed back after the cancel (a retry, a
    # release) or left claimed when it died: nobody will send them any more.
    Delivery.objects.filter(send__status=EmailSend.Status.CANCELLED).filter(
        Q(status=Delivery.Status.PENDING) | expired
    ).update(status=Delivery.Status.SKIPPED, last_error="The send was cancelled.")
    for email_send in EmailSend.objects.filter(status__in=ACTIVE_SEND_STATUSES):
        released = Delivery.objects.filter(expired, send=email_send).update(
            status=Delivery.Status.PENDING
        )
        result.released += released
        if email_send.status == EmailSend.Status.QUEUED:
            if email_send.created_at < idle_before:
                start_send(email_send_id=email_send.pk)
                result.restarted.append(email_send.pk)
            continue
        if Delivery.objects.filter(send=email_send, status=Delivery.Status.CLAIMED).exists():
            continue
        due = due_deliveries(email_send_id=email_send.pk, now=now).count()
        idle = email_send.last_activity_at is None or email_send.last_activity_at < idle_before
        if due and (idle or released):
            _queue_chunks(email_send.pk, _chains_for(due))
            result.restarted.append(email_send.pk)
        elif not due and finish_send_if_done(email_send_id=email_send.pk):
            result.finished.append(email_send.pk)
    return result
