"""Email addresses: one spelling for identity, one validity rule, and the suppression list.

`normalize_email` is the one rule. Every lookup of a reader by address, every unique
index on an address and every allauth record uses the form it returns, so two
addresses are the same reader exactly when they normalise to the same text; nothing
compares addresses with `iexact`, `upper()` or `lower()` in the database, whose case
folding treats look-alikes as equal (PostgreSQL folds the dotless i, U+0131, to `I`
and the long s, U+017F, to `S`).

The rule, built on the email-validator library:

- syntax as RFC 5321/5322 allow for deliverable mail (no quoted local parts, no IP
  literals, a dotted domain that is not a special-use name);
- the domain through IDNA 2008 with UTS-46 mapping (so `Bücher.DE`, `xn--bcher-kva.de`
  and full-width letters are one domain), stored in its ASCII (punycode) form, which
  is what the mail server resolves: gmail.com with a dotless i is `xn--gmal-nza.com`,
  another domain, while a long s in a domain is mapped to `s` (the same domain);
- the local part (before the @) must be ASCII: Django's SMTP layer cannot address a
  non-ASCII mailbox (RFC 6531), so such an address could never get its sign-in code or
  newsletter; a dotless i or a long s before the @ is refused, never folded onto
  `i` or `s`;
- the local part lower-cased with `str.lower()` on that ASCII text, so `Mixed.Case@`
  and `mixed.case@` are one reader, as every large mail provider treats them and as
  django-allauth looks addresses up. (On ASCII, `lower()` and `casefold()` agree; no
  other folding, such as dropping dots or `+tags`, is done: those are distinct
  mailboxes at many providers.)

The address is emailed in exactly this form, so the mailbox that receives a
confirmation or sign-in code is the one the identity names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from email_validator import EmailNotValidError, validate_email

from subscriptions.models import Suppression


class InvalidAddress(ValueError):
    """The text is not an address we can email; the message says why."""


def normalize_email(email: str) -> str:
    """The address's identity: ASCII lower-case local part @ IDNA (punycode) domain.

    Raises InvalidAddress, with a reason a person can read, for an address we cannot
    email.
    """
    text = (email or "").strip()
    if not text:
        raise InvalidAddress("the email address is empty")
    if not text.rpartition("@")[0].isascii():
        raise InvalidAddress(
            f"{text!r} has non-ASCII characters before the @, which cannot be sent to here"
        )
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidAddress(f"{text!r} is not a valid email address: {exc}") from exc
    # email-validator refuses more than 254 characters (RFC 5321's limit) counted in
    # this ASCII form, so what is returned always fits the address columns.
    return f"{checked.local_part.lower()}@{checked.ascii_domain.lower()}"


def normalized_or_none(email: str | None) -> str | None:
    """The identity of an address from outside (Stripe, the email provider), or None."""
    try:
        return normalize_email(email or "")
    except InvalidAddress:
        return None


def clean_address(email: str) -> str:
    """Return the normalised address or raise InvalidAddress (the forms' name for it)."""
    return normalize_email(email)


def email_hash(email: str) -> str:
    """The suppression list's key: the SHA-256 of the normalised address.

    Text that is no address is hashed trimmed and lower-cased, as before this rule, so
    such an entry can still be found and removed.
    """
    key = normalized_or_none(email) or email.strip().lower()
    return hashlib.sha256(key.encode()).hexdigest()


def suppress(*, email: str, reason: str) -> None:
    Suppression.objects.get_or_create(email_hash=email_hash(email), defaults={"reason": reason})


def unsuppress(*, email: str) -> None:
    Suppression.objects.filter(email_hash=email_hash(email)).delete()


def suppressed_among(*, emails: Iterable[str]) -> set[str]:
    """Those of `emails` (as given) that are on the suppression list."""
    by_hash = {email_hash(email): email for email in emails}
    found = Suppression.objects.filter(email_hash__in=list(by_hash)).values_list(
        "email_hash", flat=True
    )
    return {by_hash[h] for h in found}
