"""Marking: committing what the mail server or provider did with each claimed delivery.

`_ClaimKeeper` holds a chunk's claim while its connections send it: it renews the lease
and commits the sent-marks in batches. `_record_failures`, `_release` and
`_record_chunk` write the rest of a chunk's outcome when it ends. Called by
`send_chunk` only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from django.db import connection as db_connection
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone

from newsletter.models import Delivery, EmailSend
from newsletter.services.sending.claiming import (
    Claim,
    _Claimed,
    claim_timeout,
    database_now,
)
from newsletter.services.sending.refusals import BOUNCED, MAX_ATTEMPTS, PERMANENT, retry_delay
from subscriptions.services.unsubscribe import record_provider_event

logger = logging.getLogger(__name__)


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


# The claim is this worker's while the row carries its token: still claimed, or returned
# to pending by the sweeper but not claimed again (a slow worker's late mark then still
# prevents a second copy), or already marked sent by this worker (a mark written again
# after its connection dropped before the answer came back).
_MARK_SENT_SQL = (
    f"UPDATE {Delivery._meta.db_table} SET status = %s, sent_at = %s, "  # noqa: S608
    "provider_message_id = {message_id}, last_error = '', next_attempt_at = NULL "
    "WHERE id IN ({ids}) AND claim_token = %s AND status IN (%s, %s, %s)"
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
    """Commit one delivery as sent, only while no other worker has claimed it since."""
    return _mark_sent_batch([(pk, provider_message_id)], token=token, relaxed=relaxed) == 1


def _mark_sent_batch(marks: list[tuple[int, str]], *, token: int, relaxed: bool = False) -> int:
    """Commit a batch of deliveries as sent in one statement; how many were still ours.

    One plain UPDATE in its own commit (autocommit), each row's provider message id by a
    CASE on its id. `relaxed` (autocommit only) skips waiting for the flush; see
    `_ClaimKeeper`. Idempotent: written again after a lost connection, it counts the
    same rows.
    """
    if not marks:
        return 0
    message_id = "CASE id " + " ".join(["WHEN %s THEN %s"] * len(marks)) + " END"
    sql = _MARK_SENT_SQL.format(message_id=message_id, ids=", ".join(["%s"] * len(marks)))
    if relaxed and db_connection.vendor == "postgresql":
        sql += _RELAXED_COMMIT
    # A raw statement takes the datetime in the form the ORM stores it (naive UTC text
    # on SQLite), so sent_at compares and sorts like every other row's.
    sent_at = db_connection.ops.adapt_datetimefield_value(timezone.now())
    cases: list[Any] = []
    for pk, provider_message_id in marks:
        cases += [pk, provider_message_id[:300]]
    params = [
        Delivery.Status.SENT.value,
        sent_at,
        *cases,
        *(pk for pk, _ in marks),
        token,
        Delivery.Status.CLAIMED.value,
        Delivery.Status.PENDING.value,
        Delivery.Status.SENT.value,
    ]
    with db_connection.cursor() as cursor:
        cursor.execute(sql, params)
        return max(cursor.rowcount, 0)


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


_STOP = object()


class _ClaimKeeper:
    """Holds a chunk's claim while its connections send it: renews the lease, commits marks.

    The sending threads call `reserve()` before a message's content goes to the server
    and `mark()` once the server accepted it (or `unreserve()` when it did not). At most
    EMAIL_SEND_MARK_BATCH messages are reserved at a time: that is the crash window, the
    most messages this worker can have handed over without a committed sent-mark.

    Marks are committed in batches by one thread with a database connection of its own:
    it writes what has gathered once EMAIL_SEND_MARK_BATCH marks are waiting or the
    oldest has waited EMAIL_SEND_MARK_INTERVAL seconds, whichever comes first, and frees
    their reservations when the commit returns. So the database round trip overlaps with
    the SMTP dialogue instead of adding to it. A statement the database has received
    commits even if the worker is killed before reading the answer; a batch whose
    connection dropped is written again over a new one (`_reconnecting`).

    Between batches, and while the worker waits on a slow mail server, the same thread
    renews the lease every EMAIL_CLAIM_TIMEOUT / 5 seconds. `holds_claim()` turns false
    when the last renewal is more than half the timeout old (the database was
    unreachable) or the sweeper handed a delivery on: the threads then stop sending from
    the chunk.

    The marks' commits return without waiting for the WAL flush on PostgreSQL
    (`synchronous_commit` off for each batch's own transaction): a worker that dies loses
    nothing by that; only a crash of the database server itself can lose the last
    fraction of a second of marks, whose messages would go out again. The thread and its
    connection live for one chunk, in the process that runs it (never across a fork).
    Inside a transaction (tests) there is no thread: the caller's thread commits the
    marks and renews the lease on its own connection whenever it calls `serve()`.
    """

    def __init__(self, *, claim: Claim, pks: list[int]) -> None:
        self.claim = claim
        self.pks = pks
        self.sent = 0
        self.lost = 0
        self.batch_size = max(1, settings.EMAIL_SEND_MARK_BATCH)
        self.linger = max(0.0, settings.EMAIL_SEND_MARK_INTERVAL)
        self.inline = db_connection.in_atomic_block
        self._interval = settings.EMAIL_CLAIM_TIMEOUT / 5
        self._renewed_at = time.monotonic()
        self._next_renewal = self._renewed_at + self._interval
        self._handed_on = False
        self._slots = threading.Semaphore(self.batch_size)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if not self.inline:
            self._thread = threading.Thread(target=self._run, name="claim-keeper", daemon=True)
            self._thread.start()

    # --- the sending threads' side

    def holds_claim(self) -> bool:
        age = time.monotonic() - self._renewed_at
        return not self._handed_on and age < settings.EMAIL_CLAIM_TIMEOUT / 2

    def reserve(self) -> bool:
        """Wait for room in the crash window; False when the claim was lost meanwhile."""
        while not self._slots.acquire(timeout=0.05):
            if not self.holds_claim():
                return False
        return True

    def unreserve(self, count: int = 1) -> None:
        for _ in range(count):
            self._slots.release()

    def mark(self, *, pk: int, provider_message_id: str) -> None:
        """The server accepted this reserved delivery's message: commit it soon."""
        self._queue.put([(pk, provider_message_id)])

    def mark_many(self, marks: list[tuple[int, str]]) -> None:
        """Accepted deliveries not reserved one by one (a provider's batch call)."""
        if marks:
            self._queue.put((marks, False))

    # --- the caller's side

    def serve(self, timeout: float) -> None:
        """Inline only: commit what is waiting and renew when due, for up to `timeout` s."""
        if not self.inline:
            time.sleep(timeout)
            return
        batch = self._gather(timeout)
        if batch:
            self._write(batch)
        if time.monotonic() >= self._next_renewal:
            self._renew()

    def finish(self) -> int:
        """Commit the last marks and stop the helper (and its connection); the number sent."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        else:
            while batch := self._gather(0):
                self._write(batch)
        if self.lost:
            logger.error(
                "%d messages were accepted by the mail server but could not be recorded as "
                "sent (another worker had claimed them again, or the database stayed "
                "unreachable); those readers may get the email twice.",
                self.lost,
            )
        return self.sent

    # --- the helper thread

    def _gather(self, timeout: float) -> list[tuple[list[tuple[int, str]], bool]] | None:
        """Marks waiting now (after up to `timeout` s for the first), lingering for more."""
        try:
            first = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None
        if first is _STOP:
            self._queue.put(_STOP)
            return None
        batch = [self._item(first)]
        count = len(batch[0][0])
        until = time.monotonic() + self.linger
        while count < self.batch_size:
            try:
                item = self._queue.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)
                break
            batch.append(self._item(item))
            count += len(batch[-1][0])
        return batch

    @staticmethod
    def _item(item: Any) -> tuple[list[tuple[int, str]], bool]:
        return (item, True) if isinstance(item, list) else item

    def _write(self, batch: list[tuple[list[tuple[int, str]], bool]]) -> None:
        marks = [mark for marks, _ in batch for mark in marks]
        reserved = sum(len(marks) for marks, was_reserved in batch if was_reserved)
        try:
            if self.inline:
                marked = _mark_sent_batch(marks, token=self.claim.token)
            else:
                marked = _reconnecting(
                    lambda: _mark_sent_batch(marks, token=self.claim.token, relaxed=True),
                    retry_for=_MARK_RETRY_FOR,
                )
        except DatabaseError:
            logger.exception("A batch of sent-marks could not be written.")
            marked = 0
            self._handed_on = True  # stop sending: nothing more could be recorded either
        with self._lock:
            self.sent += marked
            self.lost += len(marks) - marked
        self.unreserve(reserved)

    def _run(self) -> None:
        try:
            while True:
                wait = max(0.0, self._next_renewal - time.monotonic())
                batch = self._gather(wait)
                if batch:
                    self._write(batch)
                if time.monotonic() >= self._next_renewal:
                    self._renew()
                if batch is None and self._stopping():
                    return
        finally:
            db_connection.close()  # the helper thread's own connection

    def _stopping(self) -> bool:
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return False
        if item is _STOP:
            # Anything queued before the stop has been written by now (one queue, FIFO).
            return True
        self._write([self._item(item)])
        return False

    def _renew(self) -> None:
        started = time.monotonic()
        self._next_renewal = started + self._interval
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
