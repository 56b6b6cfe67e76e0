"""Handing finished messages to an SMTP server, for every email the site sends.

Two callers: the newsletter workers, which give prepared bytes straight to an open
smtplib connection (`send_bytes`), and `EmailBackend`, the SMTP backend every other
email goes through (confirmations, receipts, sign-in codes, comment digests). Both get
the same treatment here:

- `BODY=8BITMIME` in MAIL FROM when the message has 8bit content and the server offers
  the extension (RFC 6152); when it does not, the 8bit parts are re-encoded as
  quoted-printable first, so the message is 7bit-safe.
- `SMTPUTF8` (RFC 6531) only when an envelope address needs it and the server offers it.
- A DKIM signature (RFC 6376, with dkimpy) when EMAIL_DKIM_* is configured, so the
  one-click unsubscribe headers are covered by the site's own signature whatever the
  relay does.

Also the header values every email needs: a Date with a real zone and a Message-ID on
the sender's domain. Nothing here knows about publications or readers; callers pass
addresses.
"""

from __future__ import annotations

import base64
import email
import email.charset
import email.policy
import functools
import hashlib
import re
import smtplib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address, HeaderRegistry
from email.message import Message
from email.utils import format_datetime, formatdate, make_msgid
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric import utils as asym_utils
from django.conf import settings
from django.core.mail.backends.smtp import EmailBackend as DjangoSMTPBackend
from django.core.mail.message import EmailMessage

# What the signature covers (RFC 6376 section 5.4.1 and the bulk senders' guidelines:
# the one-click unsubscribe headers must be signed). Headers a message lacks are
# signed as absent, so nobody can add them later.
DKIM_SIGNED_HEADERS = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
    "MIME-Version",
    "Content-Type",
)

_address_header = HeaderRegistry()


class AddressError(ValueError):
    """A header value is not exactly one mailbox the mail system can send from."""


@functools.lru_cache(maxsize=256)  # the sender's, once per message sent
def parse_mailbox(value: str) -> Address:
    """The one mailbox in a From-style value, parsed by the email library.

    `"The Meridian Letter, Lisbon" <letters@example.com>` is one mailbox; the same text
    without quotes is two, and is refused.
    """
    header = _address_header("From", value)
    addresses = header.addresses  # type: ignore[attr-defined]
    defects = list(header.defects)
    if len(addresses) != 1 or defects or not addresses[0].domain:
        raise AddressError(f"{value!r} is not one email address.")
    address: Address = addresses[0]
    return address


def ascii_domain(domain: str) -> str:
    """A domain as DNS and the SMTP envelope write it (IDNA, lower case)."""
    return domain.encode("idna").decode("ascii").lower() if not domain.isascii() else domain.lower()


def sender_domain(from_email: str) -> str:
    """The domain of a From value, for Message-IDs and the DKIM alignment check."""
    return ascii_domain(parse_mailbox(from_email).domain)


def envelope_address(address: str) -> str:
    """The bare address for MAIL FROM / RCPT TO: domain in IDNA, local part as it is."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{ascii_domain(domain)}" if local else address


def message_id(*, domain: str) -> str:
    """A fresh Message-ID on the sender's domain (not the machine's host name)."""
    return make_msgid(domain=ascii_domain(domain))


def date_header() -> str:
    """Now, as a Date header value: `+0000` for UTC (formatdate's `-0000` means
    "zone unknown", RFC 5322 section 3.3)."""
    if settings.EMAIL_USE_LOCALTIME:
        return formatdate(localtime=True)
    return format_datetime(datetime.now(UTC))


# --- DKIM ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DKIMKey:
    domain: str
    selector: str
    private_key: bytes  # PEM


def dkim_key() -> DKIMKey | None:
    """The configured signing key, or None when DKIM signing is off."""
    return _dkim_key(
        settings.EMAIL_DKIM_DOMAIN,
        settings.EMAIL_DKIM_SELECTOR,
        settings.EMAIL_DKIM_PRIVATE_KEY,
        settings.EMAIL_DKIM_PRIVATE_KEY_FILE,
    )


@functools.lru_cache(maxsize=4)
def _dkim_key(domain: str, selector: str, pem: str, pem_file: str) -> DKIMKey | None:
    if not domain:
        return None
    if pem_file:
        pem = Path(pem_file).read_text()
    # A PEM in one environment variable may carry its line breaks as "\n".
    pem = pem.replace("\\n", "\n").strip() + "\n"
    return DKIMKey(domain=ascii_domain(domain), selector=selector, private_key=pem.encode())


def dkim_sign(data: bytes, *, key: DKIMKey) -> bytes:
    """The message with a DKIM-Signature header in front (relaxed/relaxed, rsa-sha256).

    dkimpy parses and canonicalises (its own `sign` does the same), and the RSA
    signature is made by `cryptography` (OpenSSL): dkimpy's pure-Python RSA costs 16-24
    ms per message, longer than the rest of a newsletter message put together. The
    signature is the one dkimpy would make; tests/test_mail.py checks it with
    dkimpy's verifier.
    """
    headers, body = dkim.rfc822_parse(data)
    include = tuple(name.lower().encode() for name in DKIM_SIGNED_HEADERS)
    domain, selector = key.domain.encode(), key.selector.encode()
    body_hash = base64.b64encode(hashlib.sha256(_RELAXED.canonicalize_body(body)).digest())
    fields = [
        (b"v", b"1"),
        (b"a", b"rsa-sha256"),
        (b"c", b"relaxed/relaxed"),
        (b"d", domain),
        (b"i", b"@" + domain),
        (b"q", b"dns/txt"),
        (b"s", selector),
        (b"t", str(int(time.time())).encode()),
        (b"h", b" : ".join(include)),
        (b"bh", body_hash),
        (b"b", b""),
    ]
    unsigned = b"; ".join(b"=".join(field) for field in fields)
    hasher = hashlib.sha256()
    dkim.hash_headers(
        hasher,
        _RELAXED,
        _RELAXED.canonicalize_headers(headers),
        include,
        (b"DKIM-Signature", b" " + unsigned),
        dict(fields),
    )
    signature = _private_key(key.private_key).sign(
        hasher.digest(), padding.PKCS1v15(), asym_utils.Prehashed(hashes.SHA256())
    )
    fields[-1] = (b"b", base64.b64encode(signature))
    value = dkim.fold(
        b"; ".join(b"=".join(field) for field in fields) + b"\r\n",
        namelen=len(b"DKIM-Signature"),
        linesep=b"\r\n",
    )
    return b"DKIM-Signature: " + value + data


_RELAXED = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")


@functools.lru_cache(maxsize=4)
def _private_key(pem: bytes) -> rsa.RSAPrivateKey:
    private = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(private, rsa.RSAPrivateKey):
        raise ValueError("The DKIM key must be an RSA private key.")
    return private


def dkim_aligned(*, from_domain: str, signing_domain: str) -> bool:
    """DMARC's relaxed alignment: the From domain is the signing domain or under it."""
    from_domain, signing_domain = ascii_domain(from_domain), ascii_domain(signing_domain)
    return from_domain == signing_domain or from_domain.endswith("." + signing_domain)


def generate_dkim_key(bits: int = 2048) -> tuple[str, str]:
    """(private key PEM, DNS TXT record value) for a new RSA signing key."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"


# --- SMTP ---------------------------------------------------------------------------


def is_8bit(data: bytes) -> bool:
    return not data.isascii()


def seven_bit(data: bytes) -> bytes:
    """The message with every 8bit text part re-encoded as quoted-printable.

    For servers without 8BITMIME. Headers stay as they are (the email library already
    encodes non-ASCII header text as RFC 2047 words).
    """
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    for part in message.walk():
        if part.is_multipart() or part.get("Content-Transfer-Encoding", "").lower() != "8bit":
            continue
        _requote(part)
    return message.as_bytes(policy=email.policy.compat32.clone(linesep="\r\n"))


def _requote(part: Message) -> None:
    charset = part.get_content_charset() or "utf-8"
    text = part.get_payload(decode=True)
    assert isinstance(text, bytes)
    del part["Content-Transfer-Encoding"]
    part.set_payload(text.decode(charset, errors="replace"), charset=_qp_charset(charset))


def _qp_charset(name: str) -> email.charset.Charset:
    charset = email.charset.Charset(name)
    charset.body_encoding = email.charset.QP
    return charset


@dataclass
class Outgoing:
    """One finished message for the envelope given, as it goes on the wire."""

    sender: str
    recipients: list[str]
    data: bytes
    options: list[str]
    # The caller's own reference (the delivery it is for).
    ref: Any = None


def prepare(smtp: smtplib.SMTP, *, sender: str, recipients: list[str], data: bytes) -> Outgoing:
    """The envelope, MAIL FROM options and (signed, 7bit-safe if need be) content for one
    message over this connection.

    Raises `SMTPNotSupportedError` when an address needs SMTPUTF8 and the server does
    not offer it (such a message cannot be delivered there).
    """
    sender = envelope_address(sender)
    recipients = [envelope_address(r) for r in recipients]
    # The server's extensions are known only after EHLO, which smtplib sends lazily, in
    # sendmail(): on a fresh connection (and after STARTTLS, which forgets them) has_extn
    # would say no to 8BITMIME, and the first message would go re-encoded.
    smtp.ehlo_or_helo_if_needed()
    options: list[str] = []
    if is_8bit(data):
        if smtp.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        else:
            data = seven_bit(data)
    if not all(address.isascii() for address in (sender, *recipients)):
        if not smtp.has_extn("smtputf8"):
            raise smtplib.SMTPNotSupportedError(
                "An address needs SMTPUTF8, which the server does not offer."
            )
        options.append("SMTPUTF8")
    key = dkim_key()
    if key is not None:
        data = dkim_sign(data, key=key)
    return Outgoing(sender=sender, recipients=recipients, data=data, options=options)


def send_bytes(
    smtp: smtplib.SMTP, *, sender: str, recipients: list[str], data: bytes
) -> dict[str, tuple[int, bytes]]:
    """Send one finished message over an open connection, signed and labelled right.

    Raises smtplib's errors; `SMTPNotSupportedError` when an address needs SMTPUTF8
    and the server does not offer it (such a message cannot be delivered there).
    """
    message = prepare(smtp, sender=sender, recipients=recipients, data=data)
    return smtp.sendmail(
        message.sender, message.recipients, message.data, mail_options=message.options
    )


def offers_pipelining(smtp: smtplib.SMTP) -> bool:
    smtp.ehlo_or_helo_if_needed()
    return bool(smtp.has_extn("pipelining"))


_LEADING_DOT = re.compile(rb"(?m)^\.")


class ConnectionDropped(Exception):
    """The server closed the channel (421, or the connection broke) mid-pipeline."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def send_pipelined(
    smtp: smtplib.SMTP,
    *,
    next_message: Callable[[], Outgoing | None],
    done: Callable[[Outgoing, BaseException | None], None],
    give_back: Callable[[Outgoing], None],
) -> None:
    """Send messages one after another with RFC 2920 pipelining: one round trip each.

    Each write carries the previous message's content and final dot together with the
    next message's MAIL FROM, RCPT TO and DATA (RFC 2920 section 3.1: the content may
    begin a group, DATA must end one), then reads their replies in order. `done(m,
    None)` is called once the server accepted m's content, `done(m, error)` when it
    refused m (the errors are smtplib's, as `sendmail` raises them), `give_back(m)`
    for a message whose content was never sent. Once a message's envelope is out, its
    content follows (a DATA cannot be taken back): `next_message` is where the caller
    decides whether to go on. The server must offer PIPELINING (`offers_pipelining`).

    Raises `ConnectionDropped` when the connection breaks or the server answers 421;
    the message whose content was in flight then gets `done(m, error)` (the server may
    or may not have taken it), and the one whose envelope was in flight is given back.
    """
    accepted_envelope: Outgoing | None = None  # DATA answered 354: the content is next
    reset = False
    while True:
        content = accepted_envelope
        accepted_envelope = None
        envelope = next_message()
        if content is None and envelope is None:
            return
        parts: list[bytes] = []
        if content is not None:
            data = _LEADING_DOT.sub(b"..", content.data)
            parts += [data, b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n"]
        if envelope is not None:
            encoding = "utf-8" if "SMTPUTF8" in envelope.options else "ascii"
            if reset:
                parts.append(b"RSET\r\n")
            options = "".join(" " + option for option in envelope.options)
            parts.append(f"MAIL FROM:<{envelope.sender}>{options}\r\n".encode(encoding))
            parts += [f"RCPT TO:<{r}>\r\n".encode(encoding) for r in envelope.recipients]
            parts.append(b"DATA\r\n")
        try:
            smtp.send(b"".join(parts))
            if content is not None:
                code, reply = smtp.getreply()
                finished, content = content, None
                if code == 250:
                    done(finished, None)
                else:
                    refusal = smtplib.SMTPDataError(code, reply)
                    done(finished, refusal)
                    if code == 421:
                        if envelope is not None:
                            give_back(envelope)
                        raise ConnectionDropped(refusal)
            if envelope is not None:
                if reset:
                    smtp.getreply()
                    reset = False
                mail = smtp.getreply()
                rcpts = {r: smtp.getreply() for r in envelope.recipients}
                data_reply = smtp.getreply()
                error = _envelope_error(envelope, mail, rcpts, data_reply)
                if error is None:
                    accepted_envelope, envelope = envelope, None
                    continue
                refused, envelope = envelope, None
                done(refused, error)
                reset = True
                if 421 in (mail[0], data_reply[0], *(code for code, _ in rcpts.values())):
                    raise ConnectionDropped(error)
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            if content is not None:
                done(content, exc)
            if envelope is not None:
                give_back(envelope)
            raise ConnectionDropped(exc) from exc


def _envelope_error(
    envelope: Outgoing,
    mail: tuple[int, bytes],
    rcpts: dict[str, tuple[int, bytes]],
    data: tuple[int, bytes],
) -> BaseException | None:
    """The error `sendmail` would have raised for these replies, or None for 354."""
    if mail[0] != 250:
        return smtplib.SMTPSenderRefused(mail[0], mail[1], envelope.sender)
    refused = {r: reply for r, reply in rcpts.items() if reply[0] not in (250, 251)}
    if len(refused) == len(rcpts):
        return smtplib.SMTPRecipientsRefused(refused)
    if data[0] != 354:
        return smtplib.SMTPDataError(data[0], data[1])
    return None


class EmailBackend(DjangoSMTPBackend):
    """Django's SMTP backend, with 8BITMIME/SMTPUTF8 and DKIM handled by `send_bytes`."""

    def _send(self, email_message: EmailMessage) -> bool:
        recipients = email_message.recipients()
        if not recipients:
            return False
        assert self.connection is not None
        mime: Any = email_message.message()  # Django's SafeMIME*: as_bytes takes linesep
        data: bytes = mime.as_bytes(linesep="\r\n")
        sender = parse_mailbox(email_message.from_email).addr_spec
        envelope = [parse_mailbox(r).addr_spec for r in recipients]
        try:
            send_bytes(self.connection, sender=sender, recipients=envelope, data=data)
        except smtplib.SMTPException:
            if not self.fail_silently:
                raise
            return False
        return True
