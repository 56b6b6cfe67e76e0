"""How the Substack import came out: readers, paid readers, adopted and granted ones."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from substack.services import import_status_lines


class Command(BaseCommand):
    help = (
        "Summarise the readers imported from Substack: by status, paid now, adopted Stripe "
        "memberships by status, and comp and gift memberships still running."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        for line in import_status_lines():
            self.stdout.write(line)
