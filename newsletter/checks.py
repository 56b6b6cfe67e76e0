"""System checks for email: `manage.py check` (and every start) reports these."""

from __future__ import annotations

from typing import Any

import dkim.crypto
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register
from django.db import DatabaseError

from config.mail import AddressError, dkim_aligned, dkim_key, sender_domain


@register("email")
def check_dkim(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The DKIM key can be read, and signs for the domain the emails come from."""
    if not settings.EMAIL_DKIM_DOMAIN:
        return []
    if not (settings.EMAIL_DKIM_PRIVATE_KEY or settings.EMAIL_DKIM_PRIVATE_KEY_FILE):
        return [
            Error(
                "EMAIL_DKIM_DOMAIN is set but there is no key to sign with.",
                hint="Set EMAIL_DKIM_PRIVATE_KEY_FILE (or EMAIL_DKIM_PRIVATE_KEY); "
                "`manage.py dkim_key --output <file>` makes one.",
                id="newsletter.E101",
            )
        ]
    try:
        key = dkim_key()
        assert key is not None
        dkim.crypto.parse_pem_private_key(key.private_key)
    except (OSError, dkim.crypto.UnparsableKeyError, ValueError) as exc:
        return [
            Error(
                f"The DKIM private key cannot be read: {exc}",
                hint="EMAIL_DKIM_PRIVATE_KEY(_FILE) must hold an RSA key in PEM form.",
                id="newsletter.E102",
            )
        ]
    messages: list[CheckMessage] = []
    for label, from_email in _senders():
        try:
            domain = sender_domain(from_email)
        except AddressError:
            continue  # the admin refuses such a sender; nothing to compare
        if not dkim_aligned(from_domain=domain, signing_domain=key.domain):
            messages.append(
                Warning(
                    f"Emails from {from_email} ({label}) are DKIM-signed for {key.domain}, "
                    f"which does not align with {domain}: DMARC will not count the signature.",
                    hint=f"Set EMAIL_DKIM_DOMAIN={domain} (and publish its key), or send "
                    f"from an address at {key.domain}.",
                    id="newsletter.W101",
                )
            )
    return messages


def _senders() -> list[tuple[str, str]]:
    from publication.emails import sender_address
    from publication.models import Publication

    """Who the emails come from: the publication's sender, else DEFAULT_FROM_EMAIL."""
    try:
        publication = Publication.objects.filter(pk=1).first()
    except DatabaseError:
        publication = None  # no database yet (before migrate): the setting is all we know
    if publication is not None and publication.sender_email:
        return [("the publication's sender", sender_address(publication))]
    return [("DEFAULT_FROM_EMAIL", settings.DEFAULT_FROM_EMAIL)]
