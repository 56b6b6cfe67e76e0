"""Two articles' opens and clicks around midnight UTC, rolled up, with the figures they
must give: the days are UTC days whatever the publication's time zone (here Auckland's,
13 hours ahead, so most of these events fall on another local day).

Used by tests/newsletter/test_engagement_charts.py on PostgreSQL in the test process, and
by tests/integration/test_engagement_backends.py on both PostgreSQL and SQLite through a
`manage.py shell`, so that the same rows give the same days and totals on both.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

TIME_ZONE = "Pacific/Auckland"
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def build() -> None:
    """Create the scenario's rows and roll them up as of NOW; one open comes after."""
    from newsletter.models import ClickEvent, Delivery, EmailSend, OpenEvent, TrackedLink
    from newsletter.services.engagement import roll_up_events
    from tests.factories import PublishedArticleFactory, SubscriberFactory

    def emailed(slug: str, *, readers: int, started: datetime) -> list[Delivery]:
        article = PublishedArticleFactory(slug=slug, title=slug.title())
        send = EmailSend.objects.create(
            article=article, audience="everyone", status="sent", sent_count=readers
        )
        EmailSend.objects.filter(pk=send.pk).update(started_at=started, created_at=started)
        return [
            Delivery.objects.create(
                send=send, subscriber=SubscriberFactory(), status="sent", sent_at=started
            )
            for _ in range(readers)
        ]

    def opened(delivery: Delivery, at: datetime, *, reason: str = "") -> None:
        OpenEvent.objects.create(
            delivery=delivery,
            article_id=delivery.send.article_id,
            at=at,
            engagement="machine" if reason else "human",
            reason=reason,
            first=not reason,
        )

    def clicked(delivery: Delivery, link: TrackedLink, at: datetime, *, reason: str = "") -> None:
        ClickEvent.objects.create(
            delivery=delivery,
            article_id=delivery.send.article_id,
            link=link,
            at=at,
            engagement="machine" if reason else "human",
            reason=reason,
            first=not reason,
            first_of_link=not reason,
        )

    one, two, three = emailed("straits", readers=3, started=utc(8, 20))
    report = TrackedLink.objects.create(
        article_id=one.send.article_id, url="https://example.org/report", digest="report"
    )
    opened(one, utc(8, 23, 30))
    opened(two, utc(8, 23, 50), reason="apple_proxy")
    opened(three, utc(9, 0, 10))
    clicked(one, report, utc(9, 0, 20))
    clicked(two, report, utc(9, 23, 59), reason="head")
    first, second = emailed("harbours", readers=2, started=utc(9, 12))
    opened(first, utc(9, 13), reason="apple_proxy")
    opened(second, utc(10, 0, 5), reason="prefetch")
    roll_up_events(now=NOW)
    opened(two, NOW - timedelta(seconds=10))  # not rolled up yet


def figures() -> dict[str, Any]:
    """What the charts read: the days of "straits", and both articles' totals."""
    from newsletter.models import Article
    from newsletter.services.engagement import engagement_by_article, engagement_by_day

    articles = {article.slug: article for article in Article.objects.all()}
    by_day = engagement_by_day(article=articles["straits"], until=NOW.date())
    summaries = engagement_by_article(article_ids=[article.pk for article in articles.values()])
    return {
        "days": [day.isoformat() for day in by_day.days],
        "readers_opened": list(by_day.readers_opened),
        "readers_clicked": list(by_day.readers_clicked),
        "machine_opens": list(by_day.machine_opens),
        "machine_clicks": list(by_day.machine_clicks),
        "totals": {
            slug: [
                summary.delivered,
                summary.opened_readers,
                summary.clicked_readers,
                summary.machine_opens,
                summary.machine_clicks,
            ]
            for slug, summary in (
                (slug, summaries[article.pk])
                for slug, article in articles.items()
                if article.pk in summaries
            )
        },
    }


EXPECTED: dict[str, Any] = {
    "days": ["2026-03-08", "2026-03-09", "2026-03-10"],
    "readers_opened": [1, 1, 1],
    "readers_clicked": [0, 1, 0],
    "machine_opens": [1, 0, 0],
    "machine_clicks": [0, 1, 0],
    # delivered, opened (people), clicked (people), machines' opens, machines' clicks
    "totals": {"harbours": [2, 0, 0, 2, 0], "straits": [3, 3, 1, 1, 1]},
}
