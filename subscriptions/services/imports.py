"""Bringing an existing list in: CSV reading that loses nothing, and bulk inserts.

Used by `manage.py import_subscribers`, the admin's CSV import and the Substack import
(`substack/services/`). Valid rows are imported in batches of a few
queries each; a bad row is reported with its file and line number and skipped.

Imported readers get their reader account at their first sign-in
(`subscriptions.adapters.ReaderRequestLoginCodeForm`), not here: most of a large list
never signs in, and making a user and a verified address for each row tripled the
rows an import writes.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from subscriptions.models import Subscriber
from subscriptions.services.addresses import InvalidAddress, clean_address, suppressed_among

BATCH_SIZE = 2000
# No subscriber row comes near this; anything longer is skipped unread.
MAX_LINE_BYTES = 64 * 1024
# Kept in memory for the summary; further problems are counted, not listed.
MAX_LISTED_PROBLEMS = 1000


class ImportFileError(Exception):
    """The whole file cannot be read (e.g. missing required columns)."""


@dataclass
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}, line {self.line}: {self.message}"


@dataclass
class ImportReport:
    created: int = 0
    unchanged: int = 0
    duplicates: int = 0
    suppressed: int = 0
    memberships_created: int = 0
    articles_created: int = 0
    articles_unchanged: int = 0
    rejected: int = 0
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def reject(self, *, file: str, line: int, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_LISTED_PROBLEMS:
            self.errors.append(Problem(file, line, message))

    def warn(self, *, file: str, line: int, message: str) -> None:
        if len(self.warnings) < MAX_LISTED_PROBLEMS:
            self.warnings.append(Problem(file, line, message))

    def summary_lines(self) -> list[str]:
        lines = [
            f"Subscribers created: {self.created}",
            f"Already present (unchanged): {self.unchanged}",
            f"Repeated within the import: {self.duplicates}",
            f"Skipped, on the suppression list: {self.suppressed}",
            f"Memberships created: {self.memberships_created}",
        ]
        if self.articles_created or self.articles_unchanged:
            lines += [
                f"Articles created: {self.articles_created}",
                f"Articles already imported (unchanged): {self.articles_unchanged}",
            ]
        lines.append(f"Rows rejected: {self.rejected}")
        lines += [f"  error: {p}" for p in self.errors]
        if self.rejected > len(self.errors):
            lines.append(f"  ... and {self.rejected - len(self.errors)} more")
        lines += [f"  warning: {p}" for p in self.warnings]
        return lines


@dataclass
class SubscriberRow:
    file: str
    line: int
    email: str
    name: str = ""
    created_at: datetime | None = None
    status: str = Subscriber.Status.ACTIVE
    status_reason: str = ""
    stripe_customer_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def parse_datetime_value(value: str) -> datetime | None:
    """ISO 8601 dates and times (Substack's `2023-04-01T09:30:00.000Z`); naive means UTC.

    Empty means None; anything else unreadable raises ValueError.
    """
    value = value.strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace(" UTC", "+00:00"))
    except ValueError:
        parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_bool(value: str) -> bool:
    value = value.strip().lower()
    if value in {"true", "t", "yes", "y", "1"}:
        return True
    if value in {"false", "f", "no", "n", "0", ""}:
        return False
    raise ValueError(f"{value!r} is not true or false")


class BinaryLines(Protocol):
    """An open binary file: on disk, in a zip archive, or uploaded."""

    def readline(self, size: int = ..., /) -> bytes: ...


def _decoded_lines(stream: BinaryLines, bad_lines: dict[int, str]) -> Iterator[str]:
    """The file's lines as text, each read with a bounded buffer.

    A line longer than MAX_LINE_BYTES is read past in pieces, never held whole: a
    small zip archive can hold gigabytes of one line.
    """
    number = 0
    while raw := stream.readline(MAX_LINE_BYTES):
        number += 1
        if len(raw) >= MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(MAX_LINE_BYTES)
            bad_lines[number] = f"longer than {MAX_LINE_BYTES // 1024} KB; skipped"
            yield "\n"
            continue
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            bad_lines[number] = "not UTF-8 text; save the file as UTF-8"
            yield raw.decode("utf-8", errors="replace")


def read_csv(
    *,
    stream: BinaryLines,
    file: str,
    report: ImportReport,
    required: Sequence[str],
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) with lower-cased header names; bad rows go to the report.

    Raises ImportFileError if the header lacks a required column.
    """
    bad_lines: dict[int, str] = {}
    reader = csv.reader(_decoded_lines(stream, bad_lines))
    try:
        header = next(reader)
    except StopIteration:
        raise ImportFileError(f"{file}: the file is empty") from None
    except csv.Error as exc:
        raise ImportFileError(f"{file}: not a CSV file ({exc})") from None
    if 1 in bad_lines:
        raise ImportFileError(f"{file}: the header is {bad_lines[1]}")
    columns = [name.strip().lower() for name in header]
    missing = [name for name in required if name not in columns]
    if missing:
        raise ImportFileError(
            f"{file}: missing column(s) {', '.join(missing)} (found: {', '.join(columns)})"
        )
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.reject(file=file, line=start, message=f"unreadable CSV ({exc})")
            start = reader.line_num + 1
            continue
        line, end = start, reader.line_num
        start = end + 1
        bad = next((bad_lines[n] for n in range(line, end + 1) if n in bad_lines), None)
        if bad is not None:
            report.reject(file=file, line=line, message=bad)
            continue
        if not any(v.strip() for v in values):
            continue
        # Spreadsheets often end rows with empty cells past the header: those lose nothing.
        if any(v.strip() for v in values[len(columns) :]):
            report.reject(file=file, line=line, message="more values than columns")
            continue
        yield (
            line,
            {
                name: (values[i].strip() if i < len(values) else "")
                for i, name in enumerate(columns)
            },
        )


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_subscriber_rows(
    *,
    rows: Iterable[SubscriberRow],
    source: str,
    report: ImportReport,
    after_batch: Callable[[list[SubscriberRow], dict[str, Subscriber]], None] | None = None,
    batch_size: int = BATCH_SIZE,
) -> None:
    """Create the subscribers of `rows` that do not exist yet.

    Existing subscribers are left exactly as they are. `after_batch` gets each batch's
    rows and the subscribers (new and existing) by address (rows carry
    normalised addresses: `subscriptions.services.addresses.normalize_email`).
    """
    seen: set[str] = set()
    for number, batch in enumerate(batched(rows, batch_size)):
        if number % 10 == 1:
            _refresh_planner_statistics()
        unique: list[SubscriberRow] = []
        for row in batch:
            key = row.email
            if key in seen:
                report.duplicates += 1
                continue
            seen.add(key)
            unique.append(row)
        with transaction.atomic():
            _import_batch(unique, source=source, report=report, after_batch=after_batch)


def _refresh_planner_statistics() -> None:
    """Let PostgreSQL see the table grow, so address lookups keep using their index.

    Without fresh statistics the planner still believes the freshly filled table
    is tiny and scans it whole for every batch, which makes a large import quadratic.
    """
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {connection.ops.quote_name(Subscriber._meta.db_table)}")


def _import_batch(
    rows: list[SubscriberRow],
    *,
    source: str,
    report: ImportReport,
    after_batch: Callable[[list[SubscriberRow], dict[str, Subscriber]], None] | None,
) -> None:
    emails = [row.email for row in rows]
    suppressed = suppressed_among(emails=emails)
    fields = ("pk", "email", "stripe_customer_id", "imported_from")
    existing = {s.email: s for s in Subscriber.objects.filter(email__in=emails).only(*fields)}
    taken_customers = set(
        Subscriber.objects.filter(
            stripe_customer_id__in=[r.stripe_customer_id for r in rows if r.stripe_customer_id]
        ).values_list("stripe_customer_id", flat=True)
    )
    now = timezone.now()
    new: list[Subscriber] = []
    kept: list[SubscriberRow] = []
    for row in rows:
        key = row.email
        if key in existing:
            report.unchanged += 1
            kept.append(row)
            continue
        if key in suppressed:
            report.suppressed += 1
            continue
        customer = row.stripe_customer_id or None
        if customer and customer in taken_customers:
            report.warn(
                file=row.file,
                line=row.line,
                message=f"Stripe customer {customer} already belongs to another subscriber; "
                "imported without it",
            )
            customer = None
        if customer:
            taken_customers.add(customer)
        signed_up = row.created_at or now
        inactive = row.status in {
            Subscriber.Status.UNSUBSCRIBED,
            Subscriber.Status.BOUNCED,
            Subscriber.Status.COMPLAINED,
        }
        new.append(
            Subscriber(
                email=row.email,
                name=row.name[:200],
                status=row.status,
                status_reason=row.status_reason or f"imported from {source}",
                consent_at=signed_up,
                consent_source=f"import: {source}"[:500],
                confirmed_at=signed_up if row.status != Subscriber.Status.PENDING else None,
                unsubscribed_at=now if inactive else None,
                stripe_customer_id=customer,
                imported_from=source[:100],
            )
        )
        kept.append(row)
    try:
        with transaction.atomic():
            Subscriber.objects.bulk_create(new)
        created = {s.email: s for s in new}
        report.created += len(new)
    except IntegrityError:
        # A signup of one of these addresses landed meanwhile: it keeps its row.
        for subscriber in new:
            subscriber.pk = None
        Subscriber.objects.bulk_create(new, ignore_conflicts=True)
        created = {
            s.email: s
            for s in Subscriber.objects.filter(email__in=[s.email for s in new]).only(*fields)
        }
        report.created += sum(1 for s in created.values() if s.imported_from == source[:100])
    if after_batch is not None:
        after_batch(kept, {**existing, **created})


STATUS_VALUES = {choice.value for choice in Subscriber.Status}


def subscriber_rows_from_csv(
    *, stream: BinaryLines, file: str, report: ImportReport
) -> Iterator[SubscriberRow]:
    """Rows of a plain subscriber CSV: `email` and optional `name`, `created_at`, `status`."""
    for line, row in read_csv(stream=stream, file=file, report=report, required=["email"]):
        try:
            email = clean_address(row["email"])
            created_at = parse_datetime_value(row.get("created_at", ""))
        except InvalidAddress as exc:
            report.reject(file=file, line=line, message=str(exc))
            continue
        except ValueError:
            report.reject(
                file=file,
                line=line,
                message=f"created_at {row.get('created_at')!r} is not a date (use 2024-01-31 "
                "or 2024-01-31T09:00:00Z)",
            )
            continue
        status = (row.get("status") or Subscriber.Status.ACTIVE).lower()
        if status == "subscribed":
            status = Subscriber.Status.ACTIVE
        if status not in STATUS_VALUES:
            report.reject(
                file=file,
                line=line,
                message=f"status {status!r} is not one of {', '.join(sorted(STATUS_VALUES))}",
            )
            continue
        yield SubscriberRow(
            file=file,
            line=line,
            email=email,
            name=row.get("name", ""),
            created_at=created_at,
            status=status,
        )


def import_subscribers_csv(*, stream: BinaryLines, file: str, source: str = "csv") -> ImportReport:
    """Import a subscriber CSV (admin and `manage.py import_subscribers`).

    Raises ImportFileError when the file as a whole is unusable.
    """
    report = ImportReport()
    import_subscriber_rows(
        rows=subscriber_rows_from_csv(stream=stream, file=file, report=report),
        source=source,
        report=report,
    )
    return report
