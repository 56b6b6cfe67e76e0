"""Each article's opens and clicks as the editor sees them, from daily counts.

Who calls it: the roll-up and retention beat tasks (`roll_up_events`, `expire_events`),
the article's admin page and `manage.py send_status` (`article_engagement`), the
article's charts (`engagement_by_day`) and the admin home's (`engagement_by_article`).

Raw events (tracking.py) are added to the daily counts by `roll_up_events` once they
are a minute old (a scanner's burst is settled by then), and kept for the reader's
export until TRACKING_RETENTION_DAYS, when `expire_events` deletes them. The figures
are the daily counts plus the few events not rolled up yet: a read of a few rows
whatever the size of the list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Max, Min, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from newsletter.models import (
    Article,
    ArticleEngagementDay,
    ClickEvent,
    Delivery,
    EmailSend,
    Engagement,
    EngagementRollupMark,
    LinkEngagementDay,
    OpenEvent,
    TrackedLink,
)
from newsletter.services import tracking

# Events younger than this wait for the next roll-up: a burst may still reclassify them.
SETTLE = timedelta(seconds=60)
_HUMAN = Q(engagement=Engagement.HUMAN)
_MACHINE = Q(engagement=Engagement.MACHINE)


# Events that count a reader: their first human open or click (of the email, of a link),
# marked when recorded (tracking.py), so counting readers needs no join.
_FIRST = Q(first=True)
_FIRST_OF_LINK = Q(first_of_link=True)


def _mark(table: str) -> EngagementRollupMark:
    # The writers' lock first: while it is held no flush is half-way through a
    # transaction, so no event with an id below the last committed one can still appear.
    tracking.lock_engagement_writers()
    EngagementRollupMark.objects.get_or_create(table=table)
    return EngagementRollupMark.objects.select_for_update().get(table=table)


def _settled_range(events: QuerySet, *, after: int, cutoff: datetime) -> int | None:
    """The last id that may be rolled up: every event up to it is older than `cutoff`."""
    unsettled = events.filter(id__gt=after, at__gte=cutoff).aggregate(first=Min("id"))["first"]
    if unsettled is not None:
        return int(unsettled) - 1
    last = events.filter(id__gt=after).aggregate(last=Max("id"))["last"]
    return None if last is None else int(last)


def _day() -> TruncDate:
    return TruncDate("at", tzinfo=UTC)


def roll_up_events(*, now: datetime | None = None) -> int:
    """Add the settled raw events since the last run to the daily counts; how many."""
    cutoff = (now or timezone.now()) - SETTLE
    rolled = 0
    with transaction.atomic():
        mark = _mark("open")
        upper = _settled_range(OpenEvent.objects.all(), after=mark.last_id, cutoff=cutoff)
        if upper is not None and upper > mark.last_id:
            rows = (
                OpenEvent.objects.filter(id__gt=mark.last_id, id__lte=upper)
                .annotate(day=_day())
                .values("article_id", "day")
                .annotate(
                    human=Count("id", filter=_HUMAN),
                    machine=Count("id", filter=_MACHINE),
                    readers=Count("id", filter=_FIRST),
                )
            )
            for row in rows:
                _add_article_day(
                    row["article_id"],
                    row["day"],
                    human_opens=row["human"],
                    machine_opens=row["machine"],
                    readers_opened=row["readers"],
                )
                rolled += row["human"] + row["machine"]
            mark.last_id = upper
            mark.save(update_fields=["last_id"])
    with transaction.atomic():
        mark = _mark("click")
        upper = _settled_range(ClickEvent.objects.all(), after=mark.last_id, cutoff=cutoff)
        if upper is not None and upper > mark.last_id:
            batch = ClickEvent.objects.filter(id__gt=mark.last_id, id__lte=upper).annotate(
                day=_day()
            )
            for row in batch.values("article_id", "day").annotate(
                human=Count("id", filter=_HUMAN),
                machine=Count("id", filter=_MACHINE),
                readers=Count("id", filter=_FIRST),
            ):
                _add_article_day(
                    row["article_id"],
                    row["day"],
                    human_clicks=row["human"],
                    machine_clicks=row["machine"],
                    readers_clicked=row["readers"],
                )
                rolled += row["human"] + row["machine"]
            for link_row in batch.values("link_id", "day").annotate(
                human=Count("id", filter=_HUMAN),
                machine=Count("id", filter=_MACHINE),
                readers=Count("id", filter=_FIRST_OF_LINK),
            ):
                link_day, _ = LinkEngagementDay.objects.get_or_create(
                    link_id=link_row["link_id"], day=link_row["day"]
                )
                LinkEngagementDay.objects.filter(pk=link_day.pk).update(
                    human_clicks=F("human_clicks") + link_row["human"],
                    machine_clicks=F("machine_clicks") + link_row["machine"],
                    readers=F("readers") + link_row["readers"],
                )
            mark.last_id = upper
            mark.save(update_fields=["last_id"])
    return rolled


def _add_article_day(article_id: int, day: date, **counts: int) -> None:
    row, _ = ArticleEngagementDay.objects.get_or_create(article_id=article_id, day=day)
    ArticleEngagementDay.objects.filter(pk=row.pk).update(
        **{name: F(name) + value for name, value in counts.items()}
    )


def expire_events(*, now: datetime | None = None, batch: int = 10_000) -> int:
    """Roll up, then delete raw events older than TRACKING_RETENTION_DAYS; how many."""
    now = now or timezone.now()
    roll_up_events(now=now)
    cutoff = now - timedelta(days=settings.TRACKING_RETENTION_DAYS)
    deleted = 0
    for model, table in ((OpenEvent, "open"), (ClickEvent, "click")):
        rolled_to = (
            EngagementRollupMark.objects.filter(table=table)
            .values_list("last_id", flat=True)
            .first()
        ) or 0
        while True:
            ids = list(
                model.objects.filter(at__lt=cutoff, id__lte=rolled_to).values_list("id", flat=True)[
                    :batch
                ]
            )
            if not ids:
                break
            count, _ = model.objects.filter(id__in=ids).delete()
            deleted += count
    # The deliveries' first open and click go with the events (the daily counts keep the
    # figures): the footer promises a reader's records go after the retention period.
    Delivery.objects.filter(sent_at__lt=cutoff).filter(
        Q(opened_at__isnull=False) | Q(clicked_at__isnull=False)
    ).update(opened_at=None, clicked_at=None)
    return deleted


# --- The figures --------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkFigures:
    url: str
    readers: int
    human_clicks: int
    machine_clicks: int


@dataclass(frozen=True)
class ArticleEngagement:
    delivered: int
    opened_readers: int
    human_opens: int
    machine_opens: int
    clicked_readers: int
    human_clicks: int
    machine_clicks: int
    links: tuple[LinkFigures, ...]

    @property
    def open_rate(self) -> float | None:
        return self.opened_readers / self.delivered if self.delivered else None

    @property
    def click_rate(self) -> float | None:
        return self.clicked_readers / self.delivered if self.delivered else None


def article_engagement(*, article: Article) -> ArticleEngagement:
    """Delivered, opened and clicked by readers, and by machines, and clicks per link."""
    delivered = (
        EmailSend.objects.filter(article=article).values_list("sent_count", flat=True).first()
    ) or 0
    marks = dict(EngagementRollupMark.objects.values_list("table", "last_id"))
    days = ArticleEngagementDay.objects.filter(article=article).aggregate(
        human_opens=Sum("human_opens"),
        machine_opens=Sum("machine_opens"),
        readers_opened=Sum("readers_opened"),
        human_clicks=Sum("human_clicks"),
        machine_clicks=Sum("machine_clicks"),
        readers_clicked=Sum("readers_clicked"),
    )
    totals = {name: value or 0 for name, value in days.items()}
    recent_opens = OpenEvent.objects.filter(article=article, id__gt=marks.get("open", 0)).aggregate(
        human=Count("id", filter=_HUMAN),
        machine=Count("id", filter=_MACHINE),
        readers=Count("id", filter=_FIRST),
    )
    recent_clicks = ClickEvent.objects.filter(article=article, id__gt=marks.get("click", 0))
    clicks = recent_clicks.aggregate(
        human=Count("id", filter=_HUMAN),
        machine=Count("id", filter=_MACHINE),
        readers=Count("id", filter=_FIRST),
    )
    per_link: dict[int, list[int]] = {}
    for link_id, readers, human, machine in (
        LinkEngagementDay.objects.filter(link__article=article)
        .values("link_id")
        .annotate(r=Sum("readers"), h=Sum("human_clicks"), m=Sum("machine_clicks"))
        .values_list("link_id", "r", "h", "m")
    ):
        per_link[link_id] = [readers, human, machine]
    for link_id, readers, human, machine in (
        recent_clicks.values("link_id")
        .annotate(
            r=Count("id", filter=_FIRST_OF_LINK),
            h=Count("id", filter=_HUMAN),
            m=Count("id", filter=_MACHINE),
        )
        .values_list("link_id", "r", "h", "m")
    ):
        counts = per_link.setdefault(link_id, [0, 0, 0])
        counts[0] += readers
        counts[1] += human
        counts[2] += machine
    urls = dict(TrackedLink.objects.filter(pk__in=per_link).values_list("pk", "url"))
    links = sorted(
        (LinkFigures(urls[pk], *counts) for pk, counts in per_link.items()),
        key=lambda link: (-link.readers, -link.human_clicks, link.url),
    )
    return ArticleEngagement(
        delivered=delivered,
        opened_readers=totals["readers_opened"] + recent_opens["readers"],
        human_opens=totals["human_opens"] + recent_opens["human"],
        machine_opens=totals["machine_opens"] + recent_opens["machine"],
        clicked_readers=totals["readers_clicked"] + clicks["readers"],
        human_clicks=totals["human_clicks"] + clicks["human"],
        machine_clicks=totals["machine_clicks"] + clicks["machine"],
        links=tuple(links),
    )


def opens_sentence(figures: ArticleEngagement) -> str:
    """ "Opened by 4,210 readers (62%), and 1,900 more opens by mail-privacy proxies"."""
    rate = f" ({figures.open_rate:.0%})" if figures.open_rate is not None else ""
    noun = "reader" if figures.opened_readers == 1 else "readers"
    sentence = f"Opened by {figures.opened_readers:,} {noun}{rate}"
    if figures.machine_opens:
        sentence += (
            f", and {figures.machine_opens:,} more opens by mail-privacy proxies and scanners"
        )
    return sentence


def clicks_sentence(figures: ArticleEngagement) -> str:
    rate = f" ({figures.click_rate:.0%})" if figures.click_rate is not None else ""
    noun = "reader" if figures.clicked_readers == 1 else "readers"
    sentence = f"Clicked by {figures.clicked_readers:,} {noun}{rate}"
    if figures.machine_clicks:
        sentence += f", and {figures.machine_clicks:,} more clicks by link scanners"
    return sentence


# --- The figures over time and over many articles, for the charts -------------------------


@dataclass(frozen=True)
class EngagementByDay:
    """One article's opens and clicks per UTC day, from the send's day to the last one.

    `readers_opened`/`readers_clicked` count the readers whose first open or click by a
    person was that day, so each sums to the article's readers; the machines' series
    count their opens and clicks.
    """

    days: tuple[date, ...]
    readers_opened: tuple[int, ...]
    readers_clicked: tuple[int, ...]
    machine_opens: tuple[int, ...]
    machine_clicks: tuple[int, ...]


_DAY_FIELDS = ("readers_opened", "readers_clicked", "machine_opens", "machine_clicks")


def engagement_by_day(*, article: Article, until: date | None = None) -> EngagementByDay:
    """The article's days since its send (up to `until`, default today), one row a day.

    Reads the daily counts and the raw events not rolled up yet (those of the last
    minute or so): as many rows as days, whatever the size of the list.
    """
    send = EmailSend.objects.filter(article=article).values("started_at", "created_at").first()
    if send is None:
        return EngagementByDay((), (), (), (), ())
    counts: dict[date, dict[str, int]] = {}

    def add(day: date, **values: int) -> None:
        row = counts.setdefault(day, dict.fromkeys(_DAY_FIELDS, 0))
        for name, value in values.items():
            row[name] += value

    for row in ArticleEngagementDay.objects.filter(article=article).values("day", *_DAY_FIELDS):
        day = row.pop("day")
        add(day, **row)
    marks = dict(EngagementRollupMark.objects.values_list("table", "last_id"))
    for row in (
        OpenEvent.objects.filter(article=article, id__gt=marks.get("open", 0))
        .annotate(day=_day())
        .values("day")
        .annotate(readers=Count("id", filter=_FIRST), machine=Count("id", filter=_MACHINE))
    ):
        add(row["day"], readers_opened=row["readers"], machine_opens=row["machine"])
    for row in (
        ClickEvent.objects.filter(article=article, id__gt=marks.get("click", 0))
        .annotate(day=_day())
        .values("day")
        .annotate(readers=Count("id", filter=_FIRST), machine=Count("id", filter=_MACHINE))
    ):
        add(row["day"], readers_clicked=row["readers"], machine_clicks=row["machine"])
    sent_at = send["started_at"] or send["created_at"]
    first = min([sent_at.astimezone(UTC).date(), *counts])
    last = max([until or timezone.now().astimezone(UTC).date(), *counts])
    days = tuple(first + timedelta(days=n) for n in range((last - first).days + 1))
    empty = dict.fromkeys(_DAY_FIELDS, 0)
    return EngagementByDay(
        days,
        *(tuple(counts.get(day, empty)[name] for day in days) for name in _DAY_FIELDS),
    )


@dataclass(frozen=True)
class EngagementSummary:
    """An article's readers and machines in totals, without the links."""

    delivered: int
    opened_readers: int
    clicked_readers: int
    machine_opens: int
    machine_clicks: int

    @property
    def open_rate(self) -> float | None:
        return self.opened_readers / self.delivered if self.delivered else None

    @property
    def click_rate(self) -> float | None:
        return self.clicked_readers / self.delivered if self.delivered else None


def engagement_by_article(*, article_ids: Sequence[int]) -> dict[int, EngagementSummary]:
    """The totals of every article asked about that was emailed, in five queries.

    One GROUP BY over the daily counts, and one each over the raw events not rolled up
    yet, however many articles: the admin home's table and chart read this.
    """
    delivered = dict(
        EmailSend.objects.filter(article_id__in=article_ids).values_list("article_id", "sent_count")
    )
    if not delivered:
        return {}
    totals: dict[int, dict[str, int]] = {pk: dict.fromkeys(_DAY_FIELDS, 0) for pk in delivered}
    for row in (
        ArticleEngagementDay.objects.filter(article_id__in=delivered)
        .values("article_id")
        .annotate(
            opened=Sum("readers_opened"),
            clicked=Sum("readers_clicked"),
            machine_o=Sum("machine_opens"),
            machine_c=Sum("machine_clicks"),
        )
    ):
        article = totals[row["article_id"]]
        article["readers_opened"] += row["opened"] or 0
        article["readers_clicked"] += row["clicked"] or 0
        article["machine_opens"] += row["machine_o"] or 0
        article["machine_clicks"] += row["machine_c"] or 0
    marks = dict(EngagementRollupMark.objects.values_list("table", "last_id"))
    for model, table, readers, machines in (
        (OpenEvent, "open", "readers_opened", "machine_opens"),
        (ClickEvent, "click", "readers_clicked", "machine_clicks"),
    ):
        for recent in (
            model.objects.filter(article_id__in=delivered, id__gt=marks.get(table, 0))
            .values("article_id")
            .annotate(r=Count("id", filter=_FIRST), m=Count("id", filter=_MACHINE))
        ):
            totals[recent["article_id"]][readers] += recent["r"]
            totals[recent["article_id"]][machines] += recent["m"]
    return {
        pk: EngagementSummary(
            delivered=delivered[pk] or 0,
            opened_readers=counts["readers_opened"],
            clicked_readers=counts["readers_clicked"],
            machine_opens=counts["machine_opens"],
            machine_clicks=counts["machine_clicks"],
        )
        for pk, counts in totals.items()
    }
