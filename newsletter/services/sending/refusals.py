"""What a refused or failed message says about its delivery: retry, fail, or bounce."""

from __future__ import annotations

import re
import smtplib
from datetime import timedelta

from anymail.exceptions import AnymailError, AnymailRecipientsRefused

MAX_ATTEMPTS = 5
# Temporary failures are retried after 1, 4, 16 and 64 minutes, then recorded as failed.
RETRY_BASE = timedelta(minutes=1)

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
