"""Handing a chunk to an email provider's batch API: hundreds of readers per call.

For the anymail backends whose providers take many recipients per API call, a sending
thread (`handover.py`) hands its deliveries over in calls of up to the provider's
limit, one call per segment's readers, each reader's greeting, address, unsubscribe
link and List-Unsubscribe header as per-recipient merge data, and records each
recipient's own result from the provider's answer:

- Mailgun (`anymail.backends.mailgun.EmailBackend`): up to 1,000 recipients per call;
  the values go in as recipient-variables (`%recipient.unsubscribe_html%`), and
  Mailgun makes one message per recipient. It answers for the whole call (queued).
- Postmark (`anymail.backends.postmark.EmailBackend`): up to 500 messages per call to
  its batch endpoint, which takes complete messages: each reader's copy is filled in
  here (`{{unsubscribe_html}}`), since Postmark merges only into stored templates. It
  answers per message (an ErrorCode each).

Accepted recipients are marked sent in one batch as soon as the call returns. A call
the provider refuses as a whole with 429 or 5xx, or that never got an answer, is
retried later for all its recipients (attempts and back-off as for SMTP); a call
refused with another 4xx, and a recipient the provider rejects (inactive, invalid),
fail permanently. Two refused calls in a row on a connection end its share of the
chunk, as two dropped SMTP connections do. EMAIL_SEND_ESP_BATCH=false turns this off
(one API call per reader, through anymail's ordinary path).

Other backends (SMTP, the file and memory backends of development and tests) are
sent one message at a time.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from anymail.backends.mailgun import EmailBackend as MailgunBackend
from anymail.backends.postmark import EmailBackend as PostmarkBackend
from anymail.backends.postmark import PostmarkPayload
from anymail.exceptions import (
    AnymailAPIError,
    AnymailError,
    AnymailRecipientsRefused,
    AnymailRequestsAPIError,
)
from anymail.message import AnymailRecipientStatus
from django.conf import settings

from newsletter.services.email_rendering import Reader, batch_message, merge_values
from newsletter.services.sending.claiming import _Claimed
from newsletter.services.sending.refusals import PERMANENT, TEMPORARY

if TYPE_CHECKING:
    from newsletter.services.sending.handover import _Work

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchAPI:
    name: str
    max_recipients: int
    # A merge field as the provider (or our filling-in) writes it in the message.
    field_syntax: str

    def merge_field(self, name: str) -> str:
        return self.field_syntax.replace("NAME", name)


MAILGUN = BatchAPI(name="Mailgun", max_recipients=1000, field_syntax="%recipient.NAME%")
POSTMARK = BatchAPI(name="Postmark", max_recipients=500, field_syntax="{{NAME}}")


def batch_api(connection: Any) -> BatchAPI | None:
    """The batch API to use over this email backend, or None (one message at a time)."""
    if not settings.EMAIL_SEND_ESP_BATCH:
        return None
    if isinstance(connection, MailgunBackend):
        return MAILGUN
    if isinstance(connection, PostmarkBackend) and not connection.use_bulk_api:
        return POSTMARK
    return None


class _PostmarkBatchPayload(PostmarkPayload):
    """Postmark's /email/batch with each recipient's merge data filled into their copy.

    anymail refuses merge_data without a stored template for Postmark; the batch
    endpoint takes complete messages, so each one is completed here instead.
    """

    def get_api_endpoint(self) -> str:
        return "email/batch"

    def data_for_recipient(self, to: Any) -> dict[str, Any]:
        saved: Any = getattr(self, "merge_data", None)
        merge = (saved or {}).get(to.addr_spec, {})
        self.merge_data = None
        try:
            data: dict[str, Any] = super().data_for_recipient(to)
        finally:
            self.merge_data = saved
        for key in ("HtmlBody", "TextBody"):
            if key in data:
                data[key] = _fill(data[key], merge)
        return data


def _fill(body: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        body = body.replace(POSTMARK.merge_field(name), value)
    return body


class PostmarkBatchBackend(PostmarkBackend):
    """anymail's Postmark backend, sending merge data through the batch endpoint, with
    each message's own ErrorCode as its recipient's status."""

    def build_message_payload(self, message: Any, defaults: Any) -> _PostmarkBatchPayload:
        return _PostmarkBatchPayload(message, defaults, self)

    def parse_recipient_status(
        self, response: Any, payload: Any, message: Any
    ) -> dict[str, AnymailRecipientStatus]:
        answers = self.deserialize_json_response(response, payload, message)
        if not isinstance(answers, list):
            # A call refused as a whole (422 with one error object, not one per message).
            answer = answers if isinstance(answers, dict) else {}
            code, text = answer.get("ErrorCode"), answer.get("Message", "")
            raise AnymailRequestsAPIError(
                f"Postmark refused the batch: {code} {text}",
                email_message=message,
                payload=payload,
                response=response,
                backend=self,
                status_code=response.status_code,
            )
        statuses: dict[str, AnymailRecipientStatus] = {}
        errors: dict[str, str] = {}
        for to, answer in zip(payload.to_emails, answers, strict=False):
            code = answer.get("ErrorCode", 0)
            if code == 0:
                statuses[to.addr_spec] = AnymailRecipientStatus(
                    message_id=answer.get("MessageID"), status="sent"
                )
                continue
            # 406: an inactive recipient (bounced or complained before); 300: invalid.
            status = "rejected" if code == 406 else "invalid" if code == 300 else "failed"
            statuses[to.addr_spec] = AnymailRecipientStatus(message_id=None, status=status)
            errors[to.addr_spec] = f"Postmark {code}: {answer.get('Message', '')}"
        for to in payload.to_emails[len(answers) :]:
            statuses[to.addr_spec] = AnymailRecipientStatus(message_id=None, status="failed")
            errors[to.addr_spec] = "Postmark did not answer for this message."
        message.broadside_errors = errors
        return statuses


def _batch_backend(connection: Any) -> Any:
    if isinstance(connection, PostmarkBackend) and not isinstance(connection, PostmarkBatchBackend):
        batch = PostmarkBatchBackend(fail_silently=False)
        batch.server_token = connection.server_token
        batch.api_url = connection.api_url
        batch.message_stream = connection.message_stream
        return batch
    return connection


def send_batches(*, connection: Any, work: _Work) -> None:
    """This connection's share of the chunk, in batch calls."""
    api = batch_api(connection)
    assert api is not None
    connection = _batch_backend(connection)
    refused_before = False  # whether the previous call was refused as a whole too
    connection.open()
    try:
        while work.keeper.holds_claim():
            deliveries = work.take(api.max_recipients)
            if not deliveries:
                return
            refused = ""
            # One call per email: segment, and tracked or not.
            for variant in dict.fromkeys(work.variant(d) for d in deliveries):
                group = [d for d in deliveries if work.variant(d) == variant]
                refused = (
                    _send_batch(connection=connection, api=api, work=work, group=group) or refused
                )
            if refused and refused_before and work.left:
                work.stop(outage=refused)
                return
            refused_before = bool(refused)
    finally:
        connection.close()


def _send_batch(*, connection: Any, api: BatchAPI, work: _Work, group: list[_Claimed]) -> str:
    """One call for these readers of one segment; the error when refused as a whole."""
    rendered = work.email_for(group[0])
    # Mailgun's recipient-variables and Postmark's messages are keyed by address.
    by_address: dict[str, _Claimed] = {}
    for delivery in group:
        if delivery.email in by_address:  # never two copies in one call
            work.give_back([delivery])
            continue
        by_address[delivery.email] = delivery
    merge_data, merge_headers = {}, {}
    for address, delivery in by_address.items():
        reader = Reader(
            subscriber_id=delivery.subscriber_id,
            email=delivery.email,
            name=delivery.name,
            delivery_id=delivery.pk,
        )
        merge_data[address], merge_headers[address] = merge_values(
            rendered=rendered, reader=reader, send_id=work.email_send_id
        )
    message: Any = batch_message(
        rendered=rendered,
        recipients=list(by_address),
        send_id=work.email_send_id,
        merge_field=api.merge_field,
    )
    message.merge_data = merge_data
    message.merge_headers = merge_headers
    try:
        connection.send_messages([message])
    except AnymailRecipientsRefused:
        pass  # every recipient rejected: their statuses say why, below
    except AnymailError as exc:
        kind = _call_refusal_kind(exc)
        error = f"{api.name}: {_short(exc)}"
        for delivery in by_address.values():
            work.fail_kind(delivery, kind, error)
        return error if kind == TEMPORARY else ""
    statuses = getattr(message.anymail_status, "recipients", {}) or {}
    errors: dict[str, str] = getattr(message, "broadside_errors", {})
    marks = []
    for address, delivery in by_address.items():
        status = statuses.get(address)
        if status is not None and status.status in ("sent", "queued"):
            marks.append((delivery.pk, status.message_id or ""))
            continue
        state = status.status if status is not None else "unknown"
        error = errors.get(address) or f"{api.name}: the recipient was {state}."
        kind = PERMANENT if state in ("rejected", "invalid") else TEMPORARY
        work.fail_kind(delivery, kind, error)
    work.keeper.mark_many(marks)
    return ""


def _call_refusal_kind(exc: AnymailError) -> str:
    """A refused call: worth retrying (throttled, the provider's fault, no answer) or not."""
    status = getattr(exc, "status_code", None)
    if not isinstance(exc, AnymailAPIError) or status is None:
        return TEMPORARY
    return TEMPORARY if status == 429 or status >= 500 else PERMANENT


def _short(exc: AnymailError) -> str:
    response = getattr(exc, "response", None)
    if response is not None:
        try:
            detail = json.dumps(response.json())[:200]
        except ValueError:
            detail = response.text[:200]
        return f"HTTP {response.status_code} {detail}"
    return f"{type(exc).__name__}: {str(exc)[:200]}"
