"""Email addresses: one spelling, one validity rule, and the suppression list."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from subscriptions.models import Suppression


class InvalidAddress(ValueError):
    """The text is not an address we can email; the message says why."""


def normalize_email(email: str) -> str:
    """Trim it and lower-case the domain (the local part is the mailbox owner's to case)."""
    email = email.strip()
    local, at, domain = email.rpartition("@")
    if not at:
        return email
    return f"{local}@{domain.lower()}"


def clean_address(email: str) -> str:
    """Return the normalised address or raise InvalidAddress with a reason a person reads."""
    email = normalize_email(email or "")
    if not email:
        raise InvalidAddress("the email address is empty")
    local = email.rpartition("@")[0]
    if local and not local.isascii():
        # Django's SMTP layer cannot address a non-ASCII mailbox name (RFC 6531), so such
        # a subscriber could never be emailed. Internationalised domains are fine.
        raise InvalidAddress(f"{email!r} has non-ASCII characters before the @")
    if len(email) > 254:
        raise InvalidAddress("the email address is longer than 254 characters")
    try:
        validate_email(email)
    except ValidationError as exc:
        raise InvalidAddress(f"{email!r} is not a valid email address") from exc
    return email


def email_hash(email: str) -> str:
    return hashlib.sha256(normalize_email(email).lower().encode()).hexdigest()


def suppress(*, email: str, reason: str) -> None:
    Suppression.objects.get_or_create(email_hash=email_hash(email), defaults={"reason": reason})


def unsuppress(*, email: str) -> None:
    Suppression.objects.filter(email_hash=email_hash(email)).delete()


def suppressed_among(*, emails: Iterable[str]) -> set[str]:
    """The lower-cased addresses of `emails` that are on the suppression list."""
    by_hash = {email_hash(email): email.lower() for email in emails}
    found = Suppression.objects.filter(email_hash__in=list(by_hash)).values_list(
        "email_hash", flat=True
    )
    return {by_hash[h] for h in found}
