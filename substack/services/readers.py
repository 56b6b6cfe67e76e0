"""The subscriber lists, and the memberships of paid, comp and gift readers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from django.utils import timezone

from subscriptions import stripe_client
from subscriptions.models import Membership, Subscriber
from subscriptions.services.addresses import InvalidAddress, clean_address
from subscriptions.services.imports import (
    MAX_LINE_BYTES,
    ImportFileError,
    ImportReport,
    SubscriberRow,
    import_subscriber_rows,
    parse_bool,
    parse_datetime_value,
    read_csv,
)
from substack.services.archive import DAMAGED_MEMBER, Export
from substack.services.report import (
    SOURCE,
    PendingPaidReader,
    SubstackReport,
)

PAID_FORMAT = "paid subscribers"
LIST_FORMAT = "email list"
MEMBERSHIP_KINDS = {
    "paid": Membership.Kind.COMP,
    "comp": Membership.Kind.COMP,
    "gift": Membership.Kind.GIFT,
}


# --- Subscribers --------------------------------------------------------------------


def _subscriber_lists(*, export: Export, report: ImportReport) -> list[tuple[str, str]]:
    found = []
    for name in export.files:
        if not name.lower().endswith(".csv") or name == "posts.csv" or name.startswith("posts/"):
            continue
        try:
            with export.open(name) as stream:
                header = stream.readline(MAX_LINE_BYTES)
        except DAMAGED_MEMBER as exc:
            report.reject(file=name, line=0, message=f"damaged in the archive ({exc})")
            continue
        first = header.decode("utf-8-sig", errors="replace").lower()
        columns = {c.strip().strip('"') for c in first.split(",")}
        if "email" in columns and ({"type", "stripe_connected_customer_id"} & columns):
            found.append((name, PAID_FORMAT))
        elif "email" in columns and "active_subscription" in columns:
            found.append((name, LIST_FORMAT))
        elif "email" in columns:
            report.reject(
                file=name,
                line=1,
                message="missing column(s): a subscriber list needs active_subscription "
                "(email list) or type (paid subscribers); file skipped",
            )
        else:
            report.warn(file=name, line=1, message="not a subscriber list; skipped")
    return found


def _rows(
    *, export: Export, name: str, layout: str, report: ImportReport
) -> Iterator[SubscriberRow]:
    required = ["email", "expiry", "email_disabled"]
    required += ["type"] if layout == PAID_FORMAT else ["active_subscription"]
    with export.open(name) as stream:
        for line, row in read_csv(stream=stream, file=name, report=report, required=required):
            try:
                email = clean_address(row["email"])
            except InvalidAddress as exc:
                report.reject(file=name, line=line, message=str(exc))
                continue
            try:
                expiry = parse_datetime_value(row["expiry"])
                created_at = parse_datetime_value(row.get("created_at", ""))
            except ValueError:
                report.reject(file=name, line=line, message="expiry or created_at is not a date")
                continue
            try:
                disabled = parse_bool(row["email_disabled"])
                if layout == PAID_FORMAT:
                    kind = row["type"].lower()
                    if kind not in MEMBERSHIP_KINDS:
                        raise ValueError(f"type {row['type']!r} is not paid, comp or gift")
                else:
                    kind = "paid" if parse_bool(row["active_subscription"]) else ""
            except ValueError as exc:
                report.reject(file=name, line=line, message=str(exc))
                continue
            yield SubscriberRow(
                file=name,
                line=line,
                email=email,
                # Not in every export; kept when the list has it.
                name=row.get("name", ""),
                created_at=created_at,
                status=Subscriber.Status.UNSUBSCRIBED if disabled else Subscriber.Status.ACTIVE,
                status_reason="email disabled on Substack" if disabled else "",
                stripe_customer_id=row.get("stripe_connected_customer_id", ""),
                extra={"kind": kind, "expires_at": expiry},
            )


def _import_subscriber_file(
    *,
    export: Export,
    name: str,
    layout: str,
    report: SubstackReport,
    pending: list[PendingPaidReader],
) -> None:
    try:
        import_subscriber_rows(
            rows=_rows(export=export, name=name, layout=layout, report=report),
            source=SOURCE,
            report=report,
            after_batch=lambda rows, subscribers: _add_memberships(
                rows=rows, subscribers=subscribers, report=report, pending=pending
            ),
        )
    except ImportFileError as exc:
        report.reject(file=name, line=1, message=str(exc))
    except DAMAGED_MEMBER as exc:
        # Batches before the damage are imported; a re-run from a good copy adds the rest.
        report.reject(file=name, line=0, message=f"damaged in the archive ({exc})")


def _add_memberships(
    *,
    rows: list[SubscriberRow],
    subscribers: dict[str, Subscriber],
    report: SubstackReport,
    pending: list[PendingPaidReader],
) -> None:
    wanted = [row for row in rows if row.extra.get("kind")]
    if not wanted:
        return
    ids = [subscribers[row.email].pk for row in wanted]
    already = set(
        Membership.objects.filter(
            subscriber_id__in=ids, imported_from__startswith=SOURCE
        ).values_list("subscriber_id", flat=True)
    )
    look_up = stripe_client.is_configured()
    new = []
    for row in wanted:
        subscriber = subscribers[row.email]
        if subscriber.pk in already:
            continue
        already.add(subscriber.pk)
        expires_at: datetime | None = row.extra["expires_at"]
        kind = row.extra["kind"]
        if row.stripe_customer_id and not subscriber.stripe_customer_id:
            taken = Subscriber.objects.filter(stripe_customer_id=row.stripe_customer_id).exists()
            if not taken:
                Subscriber.objects.filter(pk=subscriber.pk).update(
                    stripe_customer_id=row.stripe_customer_id
                )
        if kind == "paid" and row.stripe_customer_id and look_up:
            pending.append(
                PendingPaidReader(
                    subscriber_id=subscriber.pk,
                    customer_id=row.stripe_customer_id,
                    expires_at=expires_at,
                )
            )
            continue
        if kind == "paid":
            report.comp_until_expiry += 1
        new.append(
            _granted_membership(subscriber_id=subscriber.pk, kind=kind, expires_at=expires_at)
        )
    Membership.objects.bulk_create(new)
    report.memberships_created += len(new)


def _granted_membership(
    *, subscriber_id: int, kind: str, expires_at: datetime | None
) -> Membership:
    """Access until the export's expiry, as Substack granted it."""
    return Membership(
        subscriber_id=subscriber_id,
        kind=MEMBERSHIP_KINDS[kind],
        status=(
            Membership.Status.ACTIVE
            if expires_at is None or expires_at > timezone.now()
            else Membership.Status.EXPIRED
        ),
        expires_at=expires_at,
        imported_from=f"{SOURCE}:{kind}",
    )
