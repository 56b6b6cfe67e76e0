from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from subscriptions.services.imports import ImportFileError, import_subscribers_csv


class Command(BaseCommand):
    help = (
        "Import subscribers from a CSV with an `email` column and optional `name`, "
        "`created_at` and `status`. Existing addresses are left as they are; bad rows are "
        "reported by line and skipped. Exits non-zero if any row was rejected."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("csv_path", type=Path)
        parser.add_argument(
            "--source", default="csv", help="Recorded as where the subscribers came from."
        )

    def handle(self, *args: Any, csv_path: Path, source: str, **options: Any) -> None:
        if not csv_path.is_file():
            raise CommandError(f"{csv_path}: no such file")
        try:
            with csv_path.open("rb") as stream:
                report = import_subscribers_csv(stream=stream, file=csv_path.name, source=source)
        except ImportFileError as exc:
            raise CommandError(str(exc)) from exc
        for line in report.summary_lines():
            self.stdout.write(line)
        if report.rejected:
            raise CommandError(f"{report.rejected} row(s) rejected; the rest were imported.")
