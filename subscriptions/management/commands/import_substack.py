from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from subscriptions.services.imports import ImportFileError
from subscriptions.services.substack import import_substack


class Command(BaseCommand):
    help = (
        "Import a Substack export (the .zip or its unpacked folder): posts, free and paid "
        "subscribers. Running it again changes nothing. Exits non-zero if any row was rejected."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("export_path", type=Path)

    def handle(self, *args: Any, export_path: Path, **options: Any) -> None:
        try:
            report = import_substack(path=export_path)
        except ImportFileError as exc:
            raise CommandError(str(exc)) from exc
        for line in report.summary_lines():
            self.stdout.write(line)
        if report.rejected:
            raise CommandError(f"{report.rejected} row(s) rejected; the rest were imported.")
