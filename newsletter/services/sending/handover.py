"""Handing a claimed chunk to the mail server or provider, over several connections.

`send_chunk` (the chunk task's whole job) claims a chunk, renders each segment once,
and shares the chunk's deliveries out to EMAIL_SEND_CONNECTIONS sending threads, each
with a connection of its own: an SMTP server with RFC 2920 pipelining where it offers
it (one round trip per message instead of four), or an ESP's batch API
(`providers.py`). The threads take deliveries from one queue, so each is handed over
once; they touch no database (the claim keeper commits their marks, `marking.py`).
"""

from __future__ import annotations

import collections
import logging
import smtplib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.mail import get_connection
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend

from config.mail import (
    ConnectionDropped,
    Outgoing,
    offers_pipelining,
    prepare,
    send_bytes,
    send_pipelined,
)
from newsletter.models import EmailSend
from newsletter.services.email_rendering import (
    Reader,
    RenderedArticleEmail,
    envelope_sender,
    personalise,
    personalised_bytes,
    render_article_email,
)
from newsletter.services.sending import providers
from newsletter.services.sending.claiming import _Claimed, claim_chunk
from newsletter.services.sending.marking import (
    _MARK_RETRY_FOR,
    ChunkResult,
    _ClaimKeeper,
    _reconnecting,
    _record_chunk,
    _record_failures,
    _release,
)
from newsletter.services.sending.refusals import _classify, _is_connection_error
from publication.models import Publication

logger = logging.getLogger(__name__)

# A connection is opened for every this many deliveries of a chunk, up to
# EMAIL_SEND_CONNECTIONS: a handful of readers go out over one.
_DELIVERIES_PER_CONNECTION = 20

_render_cache: dict[tuple[int, str, bool, str, str], RenderedArticleEmail] = {}

# Which email a delivery gets: its segment, and whether it carries the open pixel and
# tracked links (the publication counts opens and clicks and the reader has not opted out).
Variant = tuple[str, bool]


def _variant(delivery: _Claimed, publication: Publication) -> Variant:
    return delivery.segment, publication.track_engagement and not delivery.tracking_opt_out


def _rendered(
    *, email_send: EmailSend, variant: Variant, publication: Publication
) -> RenderedArticleEmail:
    """Render once per segment (tracked or not); reused across chunks until the article
    is edited."""
    article = email_send.article
    segment, tracked = variant
    key = (
        email_send.pk,
        segment,
        tracked,
        article.updated_at.isoformat(),
        str(publication.updated_at),
    )
    if key not in _render_cache:
        if len(_render_cache) >= 8:
            _render_cache.clear()
        _render_cache[key] = render_article_email(
            article=article, segment=segment, publication=publication, tracked=tracked
        )
    return _render_cache[key]


@dataclass
class _Work:
    """A chunk shared by its sending threads: what is left, and what happened."""

    email_send_id: int
    rendered: dict[Variant, RenderedArticleEmail]
    keeper: _ClaimKeeper
    left: collections.deque[_Claimed]
    publication: Publication
    lock: threading.Lock = field(default_factory=threading.Lock)
    failures: list[tuple[_Claimed, str, str]] = field(default_factory=list)
    untried: list[_Claimed] = field(default_factory=list)
    outages: list[str] = field(default_factory=list)

    def variant(self, delivery: _Claimed) -> Variant:
        return _variant(delivery, self.publication)

    def email_for(self, delivery: _Claimed) -> RenderedArticleEmail:
        return self.rendered[self.variant(delivery)]

    def take(self, count: int = 1) -> list[_Claimed]:
        with self.lock:
            return [self.left.popleft() for _ in range(min(count, len(self.left)))]

    def give_back(self, deliveries: list[_Claimed]) -> None:
        """Never handed over: back to the front, for this or another connection."""
        with self.lock:
            self.left.extendleft(reversed(deliveries))

    def fail(self, delivery: _Claimed, exc: BaseException) -> tuple[str, str]:
        kind, error = _classify(exc)
        with self.lock:
            self.failures.append((delivery, kind, error))
        return kind, error

    def fail_kind(self, delivery: _Claimed, kind: str, error: str) -> None:
        with self.lock:
            self.failures.append((delivery, kind, error))

    def stop(self, *, outage: str = "") -> None:
        """This connection gives up; the rest is left to the other connections."""
        with self.lock:
            if outage:
                self.outages.append(outage)


def send_chunk(
    *,
    email_send_id: int,
    size: int | None = None,
    connection_factory: Callable[[], Any] = get_connection,
) -> ChunkResult:
    """Claim one chunk of a send and hand it over on up to EMAIL_SEND_CONNECTIONS
    connections at once."""
    result = ChunkResult()
    claim, claimed, result.skipped = claim_chunk(email_send_id=email_send_id, size=size)
    result.claimed = len(claimed) + result.skipped
    if not claimed:
        _record_chunk(email_send_id=email_send_id, result=result)
        return result
    email_send = EmailSend.objects.select_related("article").get(pk=email_send_id)
    publication = Publication.load()
    # Rendering reads the database: done here, before the threads, which never do.
    rendered = {
        variant: _rendered(email_send=email_send, variant=variant, publication=publication)
        for variant in {_variant(d, publication) for d in claimed}
    }
    keeper = _ClaimKeeper(claim=claim, pks=[d.pk for d in claimed])
    work = _Work(
        email_send_id=email_send_id,
        rendered=rendered,
        keeper=keeper,
        left=collections.deque(claimed),
        publication=publication,
    )
    count = max(
        1, min(settings.EMAIL_SEND_CONNECTIONS, -(-len(claimed) // _DELIVERIES_PER_CONNECTION))
    )
    threads = [
        threading.Thread(
            target=_connection_thread,
            args=(work, connection_factory),
            name=f"send-connection-{i}",
            daemon=True,
        )
        for i in range(count)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                if keeper.inline:
                    keeper.serve(0.005)  # the marks go on this thread's transaction
                else:
                    thread.join(0.5)
    finally:
        for thread in threads:
            thread.join()
        result.sent = keeper.finish()
    untried = [*work.untried, *work.left]
    if untried:
        result.released = _reconnecting(
            lambda: _release(untried, token=claim.token), retry_for=_MARK_RETRY_FOR
        )
        if work.outages:
            result.outage = work.outages[0]
            logger.warning(
                "Send %s: the mail server cannot be used (%s); %d deliveries wait, untried, "
                "for the next chunk.",
                email_send_id,
                result.outage,
                result.released,
            )
    _reconnecting(
        lambda: _record_failures(work.failures, token=claim.token, result=result),
        retry_for=_MARK_RETRY_FOR,
    )
    _reconnecting(
        lambda: _record_chunk(email_send_id=email_send_id, result=result),
        retry_for=_MARK_RETRY_FOR,
    )
    return result


def _connection_thread(work: _Work, connection_factory: Callable[[], Any]) -> None:
    """One connection's share of the chunk; any error is recorded, never raised."""
    try:
        connection = connection_factory()
    except Exception as exc:  # noqa: BLE001 (a backend that cannot be built is an outage)
        work.stop(outage=f"{type(exc).__name__}: {exc}")
        return
    try:
        if providers.batch_api(connection) is not None:
            providers.send_batches(connection=connection, work=work)
        else:
            _send_messages(connection=connection, work=work)
    except Exception as exc:
        logger.exception("A sending connection failed.")
        work.stop(outage=f"{type(exc).__name__}: {exc}")
    finally:
        try:
            connection.close()
        except Exception:
            logger.debug("Closing a sending connection failed.", exc_info=True)


def _open(connection: Any, work: _Work) -> bool:
    try:
        connection.open()
    except Exception as exc:  # noqa: BLE001 (any backend's failure to connect is temporary)
        work.stop(outage=f"{type(exc).__name__}: {exc}")
        return False
    return True


def _send_messages(*, connection: Any, work: _Work) -> None:
    """Message by message on one connection, reconnecting once after a dropped one.

    Stops (leaving the rest to the chunk's other connections, or untried) when the
    reconnect fails, or when two messages in a row lost the connection (a server or
    provider that accepts connections but takes nothing).
    """
    if not _open(connection, work):
        return
    dropped_before = False  # whether the previous message also lost the connection
    while True:
        smtp = connection.connection if isinstance(connection, SMTPBackend) else None
        accepted = [0]
        try:
            if smtp is not None and offers_pipelining(smtp):
                dropped = _pipeline(smtp, work, accepted)
            else:
                dropped = _one_by_one(connection, work, accepted)
        except OSError as exc:  # the EHLO itself
            dropped = str(exc) or type(exc).__name__
        if dropped is None:
            return
        # The server may or may not have taken the message in flight; retrying it is the
        # documented duplicate window.
        connection.close()
        if accepted[0]:
            dropped_before = False
        if dropped_before or not work.left:
            if work.left:
                work.stop(outage=dropped)
            return
        dropped_before = True
        if not _open(connection, work):
            return


def _next_delivery(work: _Work) -> _Claimed | None:
    """The next delivery for this connection, once the crash window has room for it."""
    if not work.keeper.holds_claim():
        # The lease may run out before this worker can renew it: stop before the
        # sweeper hands these deliveries to another worker.
        return None
    taken = work.take()
    if not taken:
        return None
    if not work.keeper.reserve():
        work.give_back(taken)
        return None
    return taken[0]


def _reader(delivery: _Claimed) -> Reader:
    return Reader(
        subscriber_id=delivery.subscriber_id,
        email=delivery.email,
        name=delivery.name,
        delivery_id=delivery.pk,
    )


def _one_by_one(connection: Any, work: _Work, accepted: list[int]) -> str | None:
    """Without pipelining; the error text when the connection dropped, else None.
    `accepted[0]` counts the messages the server took."""
    while (delivery := _next_delivery(work)) is not None:
        try:
            provider_id = _hand_over(
                connection=connection,
                rendered=work.email_for(delivery),
                reader=_reader(delivery),
                send_id=work.email_send_id,
            )
        except Exception as exc:  # noqa: BLE001 (recorded per delivery)
            work.keeper.unreserve()
            _, error = work.fail(delivery, exc)
            if _is_connection_error(exc):
                return error
            continue
        accepted[0] += 1
        work.keeper.mark(pk=delivery.pk, provider_message_id=provider_id)
    return None


def _pipeline(smtp: smtplib.SMTP, work: _Work, accepted: list[int]) -> str | None:
    """With RFC 2920 pipelining; the error text when the connection dropped, else None.
    `accepted[0]` counts the messages the server took."""

    def next_message() -> Outgoing | None:
        while (delivery := _next_delivery(work)) is not None:
            rendered = work.email_for(delivery)
            prepared = personalised_bytes(
                rendered=rendered, reader=_reader(delivery), send_id=work.email_send_id
            )
            if prepared is None:
                prepared = _built_bytes(rendered, delivery, work.email_send_id)
            data, provider_id = prepared
            try:
                outgoing = prepare(
                    smtp, sender=envelope_sender(rendered), recipients=[delivery.email], data=data
                )
            except smtplib.SMTPException as exc:
                work.keeper.unreserve()
                work.fail(delivery, exc)
                continue
            outgoing.ref = (delivery, provider_id)
            return outgoing
        return None

    def done(message: Outgoing, error: BaseException | None) -> None:
        delivery, provider_id = message.ref
        if error is None:
            accepted[0] += 1
            work.keeper.mark(pk=delivery.pk, provider_message_id=provider_id)
            return
        work.keeper.unreserve()
        work.fail(delivery, error)

    def give_back(message: Outgoing) -> None:
        work.keeper.unreserve()
        work.give_back([message.ref[0]])

    try:
        send_pipelined(smtp, next_message=next_message, done=done, give_back=give_back)
    except ConnectionDropped as exc:
        return _classify(exc.cause)[1]
    return None


def _built_bytes(
    rendered: RenderedArticleEmail, delivery: _Claimed, send_id: int
) -> tuple[bytes, str]:
    """A reader the prepared template cannot serve: the message built the ordinary way."""
    message = personalise(rendered=rendered, reader=_reader(delivery), send_id=send_id)
    mime: Any = message.message()
    return mime.as_bytes(linesep="\r\n"), message.extra_headers["Message-ID"]


def _hand_over(
    *, connection: Any, rendered: RenderedArticleEmail, reader: Reader, send_id: int
) -> str:
    """Give one message to the email backend; returns its message id.

    Over SMTP the prepared bytes go straight to the open smtplib connection; any other
    backend gets an ordinary message object.
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
