"""manage.py dkim_key: a new DKIM signing key, and the DNS record that publishes it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.mail import AddressError, generate_dkim_key, sender_domain
from publication.emails import sender_address
from publication.models import Publication


class Command(BaseCommand):
    help = (
        "Generate an RSA key for DKIM signing; write it to --output (or print it) and "
        "print the DNS TXT record to publish."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--domain",
            help="Signing domain (default: EMAIL_DKIM_DOMAIN, else the sender's domain).",
        )
        parser.add_argument(
            "--selector", help="DNS selector (default: EMAIL_DKIM_SELECTOR, 'broadside')."
        )
        parser.add_argument("--bits", type=int, default=2048, help="Key size (default 2048).")
        parser.add_argument(
            "--output",
            type=Path,
            help="Write the private key to this file (mode 600) instead of printing it.",
        )

    def handle(
        self,
        *args: Any,
        domain: str | None,
        selector: str | None,
        bits: int,
        output: Path | None,
        **options: Any,
    ) -> None:
        domain = domain or settings.EMAIL_DKIM_DOMAIN or self._sender_domain()
        selector = selector or settings.EMAIL_DKIM_SELECTOR
        if bits < 1024:
            raise CommandError("Mailbox providers ignore DKIM keys under 1024 bits; use 2048.")
        if output is not None and output.exists():
            raise CommandError(f"{output} exists; a new key would replace the one in use.")
        pem, record = generate_dkim_key(bits)
        if output is not None:
            descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(pem)
            key_setting = f"EMAIL_DKIM_PRIVATE_KEY_FILE={output.resolve()}"
        else:
            self.stdout.write(pem)
            key_setting = "EMAIL_DKIM_PRIVATE_KEY=<the key above, line breaks as \\n>"
        name = f"{selector}._domainkey.{domain}"
        self.stdout.write(f"Publish this TXT record at {name}:\n")
        self.stdout.write(f"{name}. IN TXT {_quoted(record)}\n")
        self.stdout.write(
            "\nThen set:\n"
            f"EMAIL_DKIM_DOMAIN={domain}\nEMAIL_DKIM_SELECTOR={selector}\n{key_setting}\n"
        )

    def _sender_domain(self) -> str:
        try:
            return sender_domain(sender_address(Publication.load()))
        except AddressError as exc:
            raise CommandError(f"Give --domain: {exc}") from exc


def _quoted(record: str) -> str:
    """A TXT value as zone files write it: strings of at most 255 characters."""
    return " ".join(f'"{record[i : i + 255]}"' for i in range(0, len(record), 255))
