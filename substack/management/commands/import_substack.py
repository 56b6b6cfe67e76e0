from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from subscriptions import stripe_client
from subscriptions.services.imports import ImportFileError
from substack.services import import_substack


class Command(BaseCommand):
    help = (
        "Import a Substack export (the .zip or its unpacked folder): posts, free and paid "
        "subscribers. With Stripe configured (the account Substack was connected to), paid "
        "readers' live subscriptions are adopted. Running it again changes nothing. Exits "
        "non-zero if any row was rejected."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("export_path", type=Path)
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Do everything (Stripe is only read) and roll it back: print what would happen.",
        )

    def handle(self, *args: Any, export_path: Path, dry_run: bool, **options: Any) -> None:
        def progress(stage: str, done: int, total: int) -> None:
            if done == total or done % 100 == 0:
                self.stderr.write(f"{stage}: {done}/{total}" if total else f"{stage}: {done}")

        try:
            report = import_substack(path=export_path, dry_run=dry_run, progress=progress)
        except ImportFileError as exc:
            raise CommandError(str(exc)) from exc
        except stripe_client.StripeError as exc:
            raise CommandError(
                f"Stripe could not be read ({exc}). What came before is imported; run the "
                "import again to carry on (nothing is imported twice)."
            ) from exc
        for line in report.summary_lines():
            self.stdout.write(line)
        if report.rejected:
            raise CommandError(f"{report.rejected} row(s) rejected; the rest were imported.")
