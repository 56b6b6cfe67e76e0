"""Email sends: from a published article to exactly one email per eligible subscriber.

The `Delivery` table is the outbox and the ledger. Publishing inserts one pending row
per reader in one statement. Workers then repeatedly claim a chunk of pending rows
(`SELECT ... FOR UPDATE SKIP LOCKED`, so any number of worker processes on any number
of machines share a send), re-check each reader at claim time, render the email once
per segment, and hand the chunk to the email backend over one connection, marking each
delivery sent in its own commit right after the server accepted it.

Exactly once: a delivery is handed to the mail server only while this worker holds its
claim, and marked sent immediately afterwards. A claim is a lease: a random token
(whose claim it is) and an expiry that the worker renews every EMAIL_CLAIM_TIMEOUT / 5
seconds while it sends (`_ClaimKeeper`), so a slow worker keeps its chunk however long
it takes, and the sweeper hands on a dead worker's chunk once the lease runs out
(EMAIL_CLAIM_TIMEOUT, 20 s by default). A worker that cannot renew (its database is
unreachable) stops sending from the chunk at half the timeout.

The window for a duplicate: a sent-mark is written right after the server accepted the
message, and a mark that fails because the database connection dropped (a restart, a
failover, a killed backend) is written again over a new connection until it lands, so
a connection loss alone costs nothing. A reader gets a second copy only when the worker
dies (or gives up after `_MARK_RETRY_FOR`) with marks not yet committed: at most two per
chunk in flight, the message whose mark is being written and the one handed over
meanwhile (see `_ClaimKeeper`). The sweeper then returns those claims to pending and the
messages go out again, with the same Message-ID. A late mark still counts while nobody
has claimed the delivery again.

When the mail server cannot be reached or drops the connection and a reconnect fails,
the chunk stops: the deliveries it had not tried go back to pending without an attempt
counted against them, and the sweeper restarts the send a sweep interval later. A
refusal that says the mailbox does not exist (5.1.x, 5.2.1) marks the reader bounced,
as the provider webhooks do; one about the message or the sender fails the delivery only.
"""

from __future__ import annotations

import logging
import queue
import re
import secrets
import smtplib
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from anymail.exceptions import AnymailError, AnymailRecipientsRefused
from django.conf import settings
from django.core.mail import get_connection
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.db import connection as db_connection
from django.db.models import Case, Count, DateTimeField, F, Max, Min, Q, QuerySet, Value, When
from django.db.models.functions import Coalesce, Now
from django.utils import timezone

from config.mail import send_bytes
from newsletter.models import Article, Delivery, EmailSend, Publication
from newsletter.services.email_rendering import (
    Reader,
    RenderedArticleEmail,
    envelope_sender,
    personalise,
    personalised_bytes,
    render_article_email,
)
from subscriptions.models import Subscriber
from subscriptions.services.access import paid_subscribers
from subscriptions.services.addresses import normalized_or_none
from subscriptions.services.unsubscribe import record_provider_event

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
# Temporary failures are retried after 1, 4, 16 and 64 minutes, then recorded as failed.
RETRY_BASE = timedelta(minutes=1)

ACTIVE_SEND_STATUSES = (EmailSend.Status.QUEUED, EmailSend.Status.SENDING)


class SendError(Exception):
    """The send cannot do what was asked; the message says why."""


# --- Publishing: the send and its deliveries ---------------------------------------


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
        email_send = EmailSend.objects.create(article=article, audience=article.email_audience)
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


def _queue_start(email_send_id: int) -> None:
    from newsletter import tasks

    tasks.start_email_send.delay(email_send_id)


def _queue_chunks(email_send_id: int, count: int) -> None:
    from newsletter import tasks

    for _ in range(count):
        tasks.send_email_chunk.delay(email_send_id)


# --- Workers: starting, claiming, sending -------------------------------------------


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


@dataclass
class ChunkResult:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retrying: int = 0
    skipped: int = 0
    released: int = 0
    bounced: int = 0
    # Why the chunk stopped early because the mail server could not be used, if it did.
    outage: str = ""
    errors: list[str] = field(default_factory=list)


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
            Delivery.objects.filter(pk__in=ids).values_list(
                "pk",
                "segment",
                "subscriber_id",
                "subscriber__email",
                "subscriber__name",
                "subscriber__status",
            )
        )
        skipped: dict[str, list[int]] = {}
        for pk, _, _, _, _, status in rows:
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
        _Claimed(pk=r[0], segment=r[1], subscriber_id=r[2], email=r[3], name=r[4]) for r in active
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


# What a failed message says about its delivery: try again later, give up on this
# message (the reader is not to blame), or give up on the address (a hard bounce).
TEMPORARY, PERMANENT, BOUNCED = "temporary", "permanent", "bounced"

# An enhanced status code (RFC 3463) at the start of the reply text: "5.1.1 ...".
_ENHANCED_STATUS = re.compile(r"\s*[245]\.(\d{1,3})\.(\d{1,3})\b")
# Basic codes that, refusing RCPT TO without an enhanced code, mean the mailbox:
# 550 mailbox unavailable, 551 user not local, 553 mailbox name not allowed (RFC 5321).
_MAILBOX_REFUSALS = (550, 551, 553)


def _refusal_kind(code: int, text: str, *, at_recipient: bool) -> str:
    """Whether a refusal is temporary, about the message or sender, or a hard bounce.

    Hard bounces are the address-status codes X.1.x (RFC 3463: no such mailbox, bad
    address, no such domain, moved), except X.1.7 and X.1.8, which are about the
    sender, and 5.2.1 (mailbox disabled). Everything else permanent (5.7.x policy,
    authentication, content, 5.2.2 mailbox full, 5.3.4 too big) fails the message only.
    """
    if code < 500:
        return TEMPORARY
    enhanced = _ENHANCED_STATUS.match(text)
    if enhanced:
        subject, detail = int(enhanced[1]), int(enhanced[2])
        if (subject == 1 and detail not in (7, 8)) or (subject, detail) == (2, 1):
            return BOUNCED
        return PERMANENT
    return BOUNCED if at_recipient and code in _MAILBOX_REFUSALS else PERMANENT


def _classify(exc: BaseException) -> tuple[str, str]:
    """(kind, message) for one failed message: TEMPORARY, PERMANENT or BOUNCED."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()))
        text = reply.decode(errors="replace")
        return _refusal_kind(code, text, at_recipient=True), f"{code} {text}"
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error
        text = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
        # MAIL FROM refused is the sender's problem whatever the code says.
        at_sender = isinstance(exc, smtplib.SMTPSenderRefused)
        kind = _refusal_kind(exc.smtp_code, text, at_recipient=False)
        if at_sender and kind == BOUNCED:
            kind = PERMANENT
        return kind, f"{exc.smtp_code} {text}"
    if isinstance(exc, AnymailRecipientsRefused):
        # The provider's own bounce and suppression reports arrive by webhook.
        return PERMANENT, str(exc)
    return TEMPORARY, f"{type(exc).__name__}: {exc}"


def _is_connection_error(exc: BaseException) -> bool:
    """Whether the connection is gone (reconnect) rather than one message refused.

    smtplib's exceptions are all OSErrors, so the server's answers are told apart first:
    only 421 closes the channel (RFC 5321 section 3.8); a refused recipient does not.
    """
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return any(code == 421 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code == 421
    return isinstance(exc, OSError) or (
        isinstance(exc, AnymailError) and not isinstance(exc, AnymailRecipientsRefused)
    )


def retry_delay(attempts: int) -> timedelta:
    return RETRY_BASE * (4 ** max(attempts - 1, 0))


_render_cache: dict[tuple[int, str, str, str], RenderedArticleEmail] = {}


def _rendered(
    *, email_send: EmailSend, segment: str, publication: Publication
) -> RenderedArticleEmail:
    """Render once per segment; reused across chunks until the article is edited."""
    article = email_send.article
    key = (email_send.pk, segment, article.updated_at.isoformat(), str(publication.updated_at))
    if key not in _render_cache:
        if len(_render_cache) >= 8:
            _render_cache.clear()
        _render_cache[key] = render_article_email(
            article=article, segment=segment, publication=publication
        )
    return _render_cache[key]


# The claim is this worker's while the row carries its token: still claimed, or returned
# to pending by the sweeper but not claimed again (a slow worker's late mark then still
# prevents a second copy), or already marked sent by this worker (a mark written again
# after its connection dropped before the answer came back).
_MARK_SENT_SQL = (
    f"UPDATE {Delivery._meta.db_table} SET status = %s, sent_at = %s, "  # noqa: S608
    "provider_message_id = %s, last_error = '', next_attempt_at = NULL "
    "WHERE id = %s AND claim_token = %s AND status IN (%s, %s, %s)"
)
# PostgreSQL: this statement's own commit does not wait for the WAL flush. Local to the
# statement's transaction, so nothing stays set on a pooled or reused connection.
_RELAXED_COMMIT = " RETURNING set_config('synchronous_commit', 'off', true)"
# How long a worker keeps writing a sent-mark whose database connection dropped before
# it gives the mark up (the reader may then get a second copy): a restart or a
# failover is over well within it.
_MARK_RETRY_FOR = 120.0
_CONNECTION_LOST = (OperationalError, InterfaceError)


def _mark_sent(*, pk: int, token: int, provider_message_id: str, relaxed: bool = False) -> bool:
    """Commit one delivery as sent, only while no other worker has claimed it since.

    Right after the server accepted the message, in its own commit, as one plain
    statement: the window between acceptance and commit stays as short as it can be.
    `relaxed` (autocommit only) skips waiting for the flush; see `_ClaimKeeper`.
    """
    sql = _MARK_SENT_SQL
    if relaxed and db_connection.vendor == "postgresql":
        sql += _RELAXED_COMMIT
    # A raw statement takes the datetime in the form the ORM stores it (naive UTC text
    # on SQLite), so sent_at compares and sorts like every other row's.
    sent_at = db_connection.ops.adapt_datetimefield_value(timezone.now())
    with db_connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                Delivery.Status.SENT.value,
                sent_at,
                provider_message_id[:300],
                pk,
                token,
                Delivery.Status.CLAIMED.value,
                Delivery.Status.PENDING.value,
                Delivery.Status.SENT.value,
            ],
        )
        return cursor.rowcount == 1


def _reconnecting(write: Callable[[], Any], *, retry_for: float) -> Any:
    """Run a database write, again over a new connection while the old one is lost.

    Only for idempotent writes: a statement whose connection dropped may or may not
    have committed.
    """
    deadline = time.monotonic() + retry_for
    delay = 0.05
    while True:
        try:
            return write()
        except _CONNECTION_LOST as exc:
            db_connection.close()  # this thread's; the next query opens a new one
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("Database connection lost (%s); writing again.", exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def send_chunk(
    *,
    email_send_id: int,
    size: int | None = None,
    connection_factory: Callable[[], Any] = get_connection,
) -> ChunkResult:
    """Claim one chunk of a send and email it over one connection."""
    result = ChunkResult()
    claim, claimed, result.skipped = claim_chunk(email_send_id=email_send_id, size=size)
    result.claimed = len(claimed) + result.skipped
    if not claimed:
        _record_chunk(email_send_id=email_send_id, result=result)
        return result
    email_send = EmailSend.objects.select_related("article").get(pk=email_send_id)
    publication = Publication.load()
    failures: list[tuple[_Claimed, str, str]] = []
    connection = connection_factory()
    keeper = _ClaimKeeper(claim=claim, pks=[d.pk for d in claimed])
    untried: list[_Claimed] = []
    dropped_before = False  # whether the previous message also lost the connection
    try:
        try:
            connection.open()
        except Exception as exc:  # noqa: BLE001 (any backend's failure to connect is temporary)
            result.outage = f"{type(exc).__name__}: {exc}"
            untried = claimed
            claimed = []
        for index, delivery in enumerate(claimed):
            if not keeper.holds_claim():
                # The lease may run out before this worker can renew it: stop before the
                # sweeper hands these deliveries to another worker.
                untried = claimed[index:]
                break
            rendered = _rendered(
                email_send=email_send, segment=delivery.segment, publication=publication
            )
            reader = Reader(
                subscriber_id=delivery.subscriber_id, email=delivery.email, name=delivery.name
            )
            try:
                provider_id = _hand_over(
                    connection=connection, rendered=rendered, reader=reader, send_id=email_send_id
                )
            except Exception as exc:  # noqa: BLE001 (recorded per delivery, below)
                kind, error = _classify(exc)
                failures.append((delivery, kind, error))
                if _is_connection_error(exc):
                    # The server may or may not have taken this one; retrying it is the
                    # documented duplicate window. Reconnect for the rest of the chunk,
                    # or stop and leave the rest, untried, to a later chunk: when the
                    # reconnect fails, or when two messages in a row lost the connection
                    # (a server or provider that accepts connections but takes nothing).
                    connection.close()
                    if dropped_before:
                        result.outage = error
                        untried = claimed[index + 1 :]
                        break
                    dropped_before = True
                    try:
                        connection.open()
                    except Exception as reopen_exc:  # noqa: BLE001
                        result.outage = f"{type(reopen_exc).__name__}: {reopen_exc}"
                        untried = claimed[index + 1 :]
                        break
                else:
                    dropped_before = False
                continue
            dropped_before = False
            keeper.mark(pk=delivery.pk, provider_message_id=provider_id)
    finally:
        connection.close()
        result.sent = keeper.finish()
    if untried:
        result.released = _reconnecting(
            lambda: _release(untried, token=claim.token), retry_for=_MARK_RETRY_FOR
        )
    if result.outage:
        logger.warning(
            "Send %s: the mail server cannot be used (%s); %d deliveries wait, untried, "
            "for the next chunk.",
            email_send_id,
            result.outage,
            result.released,
        )
    _reconnecting(
        lambda: _record_failures(failures, token=claim.token, result=result),
        retry_for=_MARK_RETRY_FOR,
    )
    _reconnecting(
        lambda: _record_chunk(email_send_id=email_send_id, result=result),
        retry_for=_MARK_RETRY_FOR,
    )
    return result


def _hand_over(
    *, connection: Any, rendered: RenderedArticleEmail, reader: Reader, send_id: int
) -> str:
    """Give one message to the email backend; returns its message id.

    Over SMTP the prepared bytes go straight to the open smtplib connection; any other
    backend (an anymail ESP) gets an ordinary message object.
    """
    smtp = connection.connection if isinstance(connection, SMTPBackend) else None
    if smtp is not None:
        prepared = personalised_bytes(rendered=rendered, reader=reader, send_id=send_id)
        if prepared is not None:
            data, provider_id = prepared
            send_bytes(smtp, sender=envelope_sender(rendered), recipients=[reader.email], data=data)
            return provider_id
    message = personalise(rendered=rendered, reader=reader, send_id=send_id)
    connection.send_messages([message])
    status = getattr(message, "anymail_status", None)
    return getattr(status, "message_id", None) or message.extra_headers.get("Message-ID", "")


_STOP = object()
_TICK = object()


class _ClaimKeeper:
    """Holds a chunk's claim while the worker sends it: renews the lease, commits marks.

    A helper thread with a database connection of its own does both. Every sent-mark is
    handed to it as soon as the server accepted the message, and the worker waits for a
    mark's result only after handing over the next message, so the database round trip
    overlaps with the SMTP dialogue instead of adding to it, and no mark is more than one
    behind: at most two messages (the one being marked and the one handed over
    meanwhile) are out without a committed mark. A statement the database has received
    commits even if the worker is killed before reading the answer; a mark whose
    connection dropped is written again over a new one (`_reconnecting`).

    Between marks, and while the worker waits on a slow mail server, the thread renews
    the lease every EMAIL_CLAIM_TIMEOUT / 5 seconds. `holds_claim()` turns false when
    the last renewal is more than half the timeout old (the database was unreachable)
    or the sweeper handed a delivery on: the worker then stops sending from the chunk.

    The marks' commits return without waiting for the WAL flush on PostgreSQL
    (`synchronous_commit` off for each mark's own transaction): a worker that dies loses
    nothing by that; only a crash of the database server itself can lose the last
    fraction of a second of marks, whose messages would go out again. The thread and its
    connection live for one chunk, in the process that runs it (never across a fork).
    Inside a transaction (tests) the marks and renewals are made inline on the caller's
    connection.
    """

    def __init__(self, *, claim: Claim, pks: list[int]) -> None:
        self.claim = claim
        self.pks = pks
        self.sent = 0
        self.lost = 0
        self.inline = db_connection.in_atomic_block
        self._interval = settings.EMAIL_CLAIM_TIMEOUT / 5
        self._renewed_at = time.monotonic()
        self._handed_on = False
        self._pending: Future[bool] | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        if not self.inline:
            self._thread = threading.Thread(target=self._run, name="claim-keeper", daemon=True)
            self._thread.start()

    def holds_claim(self) -> bool:
        if self.inline and time.monotonic() - self._renewed_at >= self._interval:
            self._renew()
        age = time.monotonic() - self._renewed_at
        return not self._handed_on and age < settings.EMAIL_CLAIM_TIMEOUT / 2

    def mark(self, *, pk: int, provider_message_id: str) -> None:
        if self.inline:
            self._count(
                _mark_sent(pk=pk, token=self.claim.token, provider_message_id=provider_message_id)
            )
            return
        submitted: Future[bool] = Future()
        self._queue.put((submitted, pk, provider_message_id))
        self._collect()  # the previous mark: never more than one behind
        self._pending = submitted

    def finish(self) -> int:
        """Wait for the last mark and stop the helper (and its connection); the number sent."""
        try:
            self._collect()
        finally:
            if self._thread is not None:
                self._queue.put(_STOP)
                self._thread.join()
        if self.lost:
            logger.error(
                "%d messages were accepted by the mail server but could not be recorded as "
                "sent (another worker had claimed them again, or the database stayed "
                "unreachable); those readers may get the email twice.",
                self.lost,
            )
        return self.sent

    def _count(self, marked: bool) -> None:
        if marked:
            self.sent += 1
        else:
            self.lost += 1

    def _collect(self) -> None:
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        try:
            self._count(pending.result())
        except DatabaseError:
            logger.exception("A sent-mark could not be written.")
            self._count(False)
            self._handed_on = True  # stop sending: nothing more could be recorded either

    def _run(self) -> None:
        next_renewal = time.monotonic() + self._interval
        try:
            while True:
                try:
                    item = self._queue.get(timeout=max(0.0, next_renewal - time.monotonic()))
                except queue.Empty:
                    item = _TICK
                if item is _STOP:
                    return
                if item is not _TICK:
                    future, pk, provider_message_id = item
                    try:
                        future.set_result(self._write_mark(pk, provider_message_id))
                    except BaseException as exc:  # noqa: BLE001 (handed to the worker)
                        future.set_exception(exc)
                if time.monotonic() >= next_renewal:
                    self._renew()
                    next_renewal = time.monotonic() + self._interval
        finally:
            db_connection.close()  # the helper thread's own connection

    def _write_mark(self, pk: int, provider_message_id: str) -> bool:
        return bool(
            _reconnecting(
                lambda: _mark_sent(
                    pk=pk,
                    token=self.claim.token,
                    provider_message_id=provider_message_id,
                    relaxed=True,
                ),
                retry_for=_MARK_RETRY_FOR,
            )
        )

    def _renew(self) -> None:
        started = time.monotonic()
        mine = Delivery.objects.filter(pk__in=self.pks)
        try:
            mine.filter(claim_token=self.claim.token, status=Delivery.Status.CLAIMED).update(
                lease_expires_at=database_now() + claim_timeout()
            )
            handed_on = mine.filter(
                Q(status=Delivery.Status.PENDING)
                | (Q(status=Delivery.Status.CLAIMED) & ~Q(claim_token=self.claim.token))
            ).exists()
        except DatabaseError as exc:
            if not self.inline:
                db_connection.close()
            logger.warning("The lease of a claimed chunk could not be renewed: %s", exc)
            return
        if handed_on:
            self._handed_on = True
        self._renewed_at = started


def _release(deliveries: list[_Claimed], *, token: int) -> int:
    """Hand untried deliveries back to pending, without counting an attempt."""
    return Delivery.objects.filter(
        pk__in=[d.pk for d in deliveries], status=Delivery.Status.CLAIMED, claim_token=token
    ).update(status=Delivery.Status.PENDING, attempts=F("attempts") - 1)


def _record_failures(
    failures: list[tuple[_Claimed, str, str]], *, token: int, result: ChunkResult
) -> None:
    if not failures:
        return
    now = database_now()
    attempts = dict(
        Delivery.objects.filter(pk__in=[d.pk for d, _, _ in failures]).values_list("pk", "attempts")
    )
    errors = []
    for delivery, kind, error in failures:
        tries = attempts.get(delivery.pk, MAX_ATTEMPTS)
        # A claim another worker has taken over since is theirs to record.
        mine = Delivery.objects.filter(
            pk=delivery.pk, status=Delivery.Status.CLAIMED, claim_token=token
        )
        if kind == BOUNCED:
            # The mailbox does not exist: no later article goes to it either.
            bounced = record_provider_event(
                email=delivery.email, event_type="bounced", description=error
            )
            result.bounced += bounced
            note = " (the reader is now marked bounced)" if bounced else ""
            result.failed += mine.update(
                status=Delivery.Status.FAILED, last_error=error + note, next_attempt_at=None
            )
        elif kind == PERMANENT or tries >= MAX_ATTEMPTS:
            result.failed += mine.update(
                status=Delivery.Status.FAILED, last_error=error, next_attempt_at=None
            )
        else:
            result.retrying += mine.update(
                status=Delivery.Status.PENDING,
                last_error=error,
                next_attempt_at=now + retry_delay(tries),
            )
        errors.append(f"{delivery.email}: {error}")
    result.errors = errors
    logger.warning("Send chunk had %d failed deliveries: %s", len(failures), errors[:5])


def _record_chunk(*, email_send_id: int, result: ChunkResult) -> None:
    """Add the chunk to the send's live counters, unless the send was finished meanwhile.

    The marks are committed before this, so a finished send's counters, counted from
    the ledger by `finish_send_if_done`, already include this chunk.
    """
    if result.sent or result.failed:
        EmailSend.objects.filter(pk=email_send_id).exclude(
            status__in=[EmailSend.Status.SENT, EmailSend.Status.FAILED]
        ).update(
            sent_count=F("sent_count") + result.sent,
            failed_count=F("failed_count") + result.failed,
            last_activity_at=Now(),
        )


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


# --- The sweeper --------------------------------------------------------------------


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


def due_deliveries(*, email_send_id: int, now: datetime) -> QuerySet[Delivery]:
    """Pending deliveries of a send whose retry, if any, has come due."""
    return Delivery.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
        send_id=email_send_id,
        status=Delivery.Status.PENDING,
    )


def _chains_for(deliveries: int) -> int:
    """How many chunk chains to run for this many deliveries."""
    chunks = -(-deliveries // max(1, settings.EMAIL_SEND_CHUNK_SIZE))
    return min(settings.EMAIL_SEND_PARALLELISM, chunks)


# --- Editors' controls --------------------------------------------------------------


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


# --- Progress -----------------------------------------------------------------------


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
