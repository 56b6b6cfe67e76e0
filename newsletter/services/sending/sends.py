"""A send's life: the send and its deliveries, its chunk chains, the editors' controls.

Called by `publish_article` (inside its transaction), by the chunk tasks between chunks,
by the sweeper, and by the admin's buttons and the management commands.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection as db_connection
from django.db import transaction
from django.db.models import Case, Count, DateTimeField, QuerySet, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from config import queue
from newsletter.models import Article, Delivery, EmailSend
from newsletter.services.email_rendering import Reader, personalise, render_article_email
from newsletter.services.sending.claiming import database_now, due_deliveries
from newsletter.services.sending.marking import ChunkResult
from publication.models import Publication
from subscriptions.models import Subscriber
from subscriptions.services.access import paid_subscribers
from subscriptions.services.addresses import normalized_or_none

ACTIVE_SEND_STATUSES = (EmailSend.Status.QUEUED, EmailSend.Status.SENDING)


class SendError(Exception):
    """The send cannot do what was asked; the message says why."""


def audience(*, article: Article) -> QuerySet[Subscriber]:
    """Subscribers an article is emailed to, annotated with their segment (free/paid)."""
    paid_ids = paid_subscribers().values("pk")
    readers = Subscriber.objects.filter(status=Subscriber.Status.ACTIVE)
    if article.email_audience == Article.EmailAudience.PAID:
        readers = readers.filter(pk__in=paid_ids)
    return readers.annotate(
        segment=Case(
            When(pk__in=paid_ids, then=Value(Delivery.Segment.PAID.value)),
            default=Value(Delivery.Segment.FREE.value),
        )
    )


def create_email_send(*, article: Article) -> EmailSend | None:
    """Create the article's send and one pending delivery per reader; queue it on commit.

    Called inside `publish_article`'s transaction. Returns None when the article goes
    to nobody. An article has at most one send (a OneToOne), so publishing again never
    emails anyone twice.
    """
    if article.email_audience == Article.EmailAudience.NOBODY:
        return None
    existing = EmailSend.objects.filter(article=article).first()
    if existing is not None:
        return existing
    with transaction.atomic():
        email_send = EmailSend.objects.create(
            article=article,
            audience=article.email_audience,
            tracked=Publication.load().track_engagement,
        )
        created = _insert_deliveries(email_send=email_send, article=article)
        email_send.recipient_count = created
        if created == 0:
            email_send.status = EmailSend.Status.SENT
            email_send.finished_at = timezone.now()
        email_send.save(update_fields=["recipient_count", "status", "finished_at"])
    if created:
        transaction.on_commit(lambda: _queue_start(email_send.pk))
    return email_send


def _insert_deliveries(*, email_send: EmailSend, article: Article) -> int:
    """One INSERT ... SELECT: no rows travel through Python (100k rows in seconds)."""
    readers: Any = audience(article=article).order_by("id")
    readers = readers.values_list("id", "segment")  # the annotation, unknown to mypy
    select_sql, params = readers.query.sql_with_params()
    table = Delivery._meta.db_table
    sql = (
        f"INSERT INTO {table} "  # noqa: S608 (table name from model meta, values as params)
        "(send_id, subscriber_id, segment, status, attempts, provider_message_id, last_error) "
        f"SELECT %s, s.id, s.segment, %s, 0, '', '' FROM ({select_sql}) AS s"
    )
    with db_connection.cursor() as cursor:
        cursor.execute(sql, [email_send.pk, Delivery.Status.PENDING, *params])
        return max(cursor.rowcount, 0)


START_EMAIL_SEND = queue.task_name("newsletter.tasks.start_email_send")
SEND_EMAIL_CHUNK = queue.task_name("newsletter.tasks.send_email_chunk")


def _queue_start(email_send_id: int) -> None:
    queue.enqueue(START_EMAIL_SEND, email_send_id)


def _queue_chunks(email_send_id: int, count: int) -> None:
    for _ in range(count):
        queue.enqueue(SEND_EMAIL_CHUNK, email_send_id)


def start_send(*, email_send_id: int) -> int:
    """Mark the send as sending and start its parallel chunk chains. Safe to repeat."""
    now = database_now()
    EmailSend.objects.filter(pk=email_send_id, status=EmailSend.Status.QUEUED).update(
        status=EmailSend.Status.SENDING,
        # A resumed or retried send keeps the time it first started.
        started_at=Coalesce("started_at", Value(now, output_field=DateTimeField())),
        last_activity_at=now,
    )
    if not EmailSend.objects.filter(pk=email_send_id, status=EmailSend.Status.SENDING).exists():
        return 0
    chains = _chains_for(due_deliveries(email_send_id=email_send_id, now=now).count())
    if chains == 0:
        finish_send_if_done(email_send_id=email_send_id)
    _queue_chunks(email_send_id, chains)
    return chains


def continue_send(*, email_send_id: int, result: ChunkResult) -> bool:
    """After a chunk: queue the next one while there was work, or finish the send.

    A chunk stopped by a mail-server outage ends its chain: the sweeper restarts the
    send once it has been idle for EMAIL_SWEEP_INTERVAL, instead of every chain
    claiming and releasing the same deliveries as fast as the server refuses them.
    """
    if result.outage:
        return False
    if result.claimed:
        _queue_chunks(email_send_id, 1)
        return True
    finish_send_if_done(email_send_id=email_send_id)
    return False


def finish_send_if_done(*, email_send_id: int) -> bool:
    """Close a send once no delivery is pending or claimed; counters from the ledger."""
    with transaction.atomic():
        email_send = EmailSend.objects.select_for_update().filter(pk=email_send_id).first()
        if email_send is None or email_send.status != EmailSend.Status.SENDING:
            return False
        counts = delivery_counts(email_send_id=email_send_id)
        if counts.get(Delivery.Status.PENDING, 0) or counts.get(Delivery.Status.CLAIMED, 0):
            return False
        sent = counts.get(Delivery.Status.SENT, 0)
        failed = counts.get(Delivery.Status.FAILED, 0)
        email_send.sent_count = sent
        email_send.failed_count = failed
        email_send.status = (
            EmailSend.Status.FAILED if failed and not sent else EmailSend.Status.SENT
        )
        email_send.finished_at = timezone.now()
        email_send.save(update_fields=["sent_count", "failed_count", "status", "finished_at"])
    return True


def delivery_counts(*, email_send_id: int) -> dict[str, int]:
    rows = (
        Delivery.objects.filter(send_id=email_send_id)
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    return dict(rows)


def _chains_for(deliveries: int) -> int:
    """How many chunk chains to run for this many deliveries."""
    chunks = -(-deliveries // max(1, settings.EMAIL_SEND_CHUNK_SIZE))
    return min(settings.EMAIL_SEND_PARALLELISM, chunks)


def pause_send(*, email_send: EmailSend) -> EmailSend:
    """Workers stop claiming; chunks already claimed finish."""
    updated = EmailSend.objects.filter(pk=email_send.pk, status__in=ACTIVE_SEND_STATUSES).update(
        status=EmailSend.Status.PAUSED
    )
    if not updated:
        raise SendError(
            f"Only a queued or sending send can be paused (this one is {email_send.status})."
        )
    email_send.refresh_from_db()
    return email_send


def resume_send(*, email_send: EmailSend) -> EmailSend:
    updated = EmailSend.objects.filter(pk=email_send.pk, status=EmailSend.Status.PAUSED).update(
        status=EmailSend.Status.QUEUED
    )
    if not updated:
        raise SendError("Only a paused send can be resumed.")
    transaction.on_commit(lambda: _queue_start(email_send.pk))
    email_send.refresh_from_db()
    return email_send


def cancel_send(*, email_send: EmailSend) -> EmailSend:
    """Stop for good: deliveries not yet claimed are skipped."""
    with transaction.atomic():
        updated = EmailSend.objects.filter(
            pk=email_send.pk,
            status__in=[*ACTIVE_SEND_STATUSES, EmailSend.Status.PAUSED],
        ).update(status=EmailSend.Status.CANCELLED, finished_at=timezone.now())
        if not updated:
            raise SendError("Only a queued, sending or paused send can be cancelled.")
        Delivery.objects.filter(send=email_send, status=Delivery.Status.PENDING).update(
            status=Delivery.Status.SKIPPED, last_error="The send was cancelled."
        )
    email_send.refresh_from_db()
    return email_send


def retry_failed_deliveries(*, email_send: EmailSend) -> int:
    """Give failed deliveries another go (e.g. after fixing the mail server settings)."""
    with transaction.atomic():
        email_send = EmailSend.objects.select_for_update().get(pk=email_send.pk)
        if email_send.status in (EmailSend.Status.CANCELLED, EmailSend.Status.PAUSED):
            raise SendError(f"Resume the send first (it is {email_send.status}).")
        count = Delivery.objects.filter(send=email_send, status=Delivery.Status.FAILED).update(
            status=Delivery.Status.PENDING, attempts=0, next_attempt_at=None
        )
        if count:
            EmailSend.objects.filter(pk=email_send.pk).update(
                status=EmailSend.Status.QUEUED, finished_at=None, failed_count=0
            )
            transaction.on_commit(lambda: _queue_start(email_send.pk))
    return count


def send_test_email(*, article: Article, to_email: str) -> None:
    """Email the paid readers' version of an article (draft or not) to one address."""
    if not to_email:
        raise SendError("Your user account has no email address to send the test to.")
    subscriber = Subscriber.objects.filter(email=normalized_or_none(to_email) or "").first()
    rendered = render_article_email(article=article, segment=Delivery.Segment.PAID)
    message = personalise(
        rendered=rendered,
        reader=Reader(
            subscriber_id=subscriber.pk if subscriber else None,
            email=to_email,
            name=subscriber.name if subscriber else "",
        ),
        send_id=0,
        subject_prefix="[Test] ",
    )
    message.send()
