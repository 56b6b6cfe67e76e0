"""Progress of a send for the admin's live view and `manage.py send_status`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from newsletter.models import Delivery, EmailSend
from newsletter.services.sending.sends import delivery_counts


@dataclass(frozen=True)
class SendProgress:
    email_send_id: int
    article_title: str
    status: str
    recipients: int
    pending: int
    claimed: int
    sent: int
    failed: int
    skipped: int
    rate_per_minute: float
    started_at: datetime | None
    finished_at: datetime | None
    last_sent_at: datetime | None
    recent_errors: list[tuple[str, str]]

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.skipped

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.recipients if self.recipients else 100.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.email_send_id,
            "status": self.status,
            "recipients": self.recipients,
            "pending": self.pending,
            "claimed": self.claimed,
            "sent": self.sent,
            "failed": self.failed,
            "skipped": self.skipped,
            "percent": round(self.percent, 1),
            "rate_per_minute": round(self.rate_per_minute, 1),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "recent_errors": [{"email": e, "error": m} for e, m in self.recent_errors],
        }


def send_progress(*, email_send: EmailSend, now: datetime | None = None) -> SendProgress:
    """Live counts from the ledger; the rate is over the last minute of sending."""
    now = now or timezone.now()
    email_send = EmailSend.objects.select_related("article").get(pk=email_send.pk)
    counts = delivery_counts(email_send_id=email_send.pk)
    sent_rows = Delivery.objects.filter(send=email_send, status=Delivery.Status.SENT)
    window = sent_rows.aggregate(
        recent=Count("id", filter=Q(sent_at__gte=now - timedelta(minutes=1))),
        first=Min("sent_at"),
        last=Max("sent_at"),
    )
    rate = float(window["recent"])
    if email_send.status != EmailSend.Status.SENDING and window["first"] and window["last"]:
        # A finished send: its average rate over the whole send.
        minutes = max((window["last"] - window["first"]).total_seconds() / 60, 1 / 60)
        rate = counts.get(Delivery.Status.SENT, 0) / minutes
    errors = list(
        Delivery.objects.filter(send=email_send)
        .exclude(last_error="")
        .filter(status__in=[Delivery.Status.FAILED, Delivery.Status.PENDING])
        .order_by("-pk")
        .values_list("subscriber__email", "last_error")[:10]
    )
    return SendProgress(
        email_send_id=email_send.pk,
        article_title=email_send.article.title,
        status=email_send.status,
        recipients=email_send.recipient_count,
        pending=counts.get(Delivery.Status.PENDING, 0),
        claimed=counts.get(Delivery.Status.CLAIMED, 0),
        sent=counts.get(Delivery.Status.SENT, 0),
        failed=counts.get(Delivery.Status.FAILED, 0),
        skipped=counts.get(Delivery.Status.SKIPPED, 0),
        rate_per_minute=rate,
        started_at=email_send.started_at,
        finished_at=email_send.finished_at,
        last_sent_at=window["last"],
        recent_errors=errors,
    )
