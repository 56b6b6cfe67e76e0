"""The charts of the admin: growth, money and each article's open and click rates on the
home page; opens and clicks by day, top links and conversions on an article.

The figures come from `subscriptions.services.growth` and `newsletter.services.engagement`
(its daily counts, never the raw events of months); the drawing from
`newsletter.services.charts`. Money is charted in the currency's main unit (dollars,
not cents), one series per currency, since amounts in two currencies do not add up.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.utils import timezone

from newsletter.models import Article, EmailSend
from newsletter.services.attribution import article_conversions
from newsletter.services.charts import Chart, Number, Series, bar_chart, line_chart
from newsletter.services.engagement import (
    ArticleEngagement,
    EngagementSummary,
    engagement_by_article,
    engagement_by_day,
)
from subscriptions.services.growth import (
    donations_by_month,
    growth_by_day,
)

# New and lost readers are drawn as bars for the last this many days.
NEW_AND_LOST_DAYS = 30
# The home page's charts are drawn at most this often: the year of figures behind them
# reads every paid reader's memberships (about 0.3 s for 100,000 readers, bench/growth.py)
# and the days past do not change.
GROWTH_CHARTS_SECONDS = 300
# An article's links charted, by readers who clicked them.
TOP_LINKS = 10
# The home page's open and click rates: the last this many articles emailed in a year.
RATES_ARTICLES = 20
RATES_DAYS = 365
_LABEL_CHARACTERS = 40


def may_see_money(user: Any) -> bool:
    """Revenue and donations are for staff who may see memberships and donations in the
    admin; an editor with only articles to write gets the audience charts."""
    return bool(user.has_perms(["subscriptions.view_membership", "subscriptions.view_donation"]))


def money(value: Number) -> str:
    return f"{value:,.2f}"


def _month(day: date) -> str:
    return f"{day:%b %Y}"


def _main_unit(cents: list[int]) -> list[float]:
    return [value / 100 for value in cents]


def cached_growth_charts(*, with_money: bool) -> list[Chart]:
    """`growth_charts` as of at most GROWTH_CHARTS_SECONDS ago, for the admin home."""
    key = f"admin:growth-charts:{'money' if with_money else 'audience'}"
    return (
        cache.get_or_set(key, lambda: growth_charts(with_money=with_money), GROWTH_CHARTS_SECONDS)
        or []
    )


def growth_charts(*, now: datetime | None = None, with_money: bool = True) -> list[Chart]:
    """Subscribers (free and paid), new and lost readers; `with_money`, MRR and
    donations by month too."""
    growth = growth_by_day(now=now)
    recent = slice(-NEW_AND_LOST_DAYS, None)
    audience = [
        line_chart(
            title="Subscribers over the last 12 months",
            dates=growth.days,
            series=[Series("Free", growth.free), Series("Paid", growth.paid)],
        ),
        bar_chart(
            title=f"New and lost readers, last {NEW_AND_LOST_DAYS} days",
            labels=[f"{day.day} {day:%b}" for day in growth.days[recent]],
            series=[Series("New", growth.new[recent]), Series("Lost", growth.lost[recent])],
        ),
    ]
    if not with_money:
        return audience
    donations = donations_by_month(now=now)
    subscribers, new_and_lost = audience
    return [
        subscribers,
        line_chart(
            title="Monthly recurring revenue",
            dates=growth.days,
            series=[
                Series(f"MRR ({currency.upper()})", _main_unit(values))
                for currency, values in sorted(growth.mrr.items())
            ]
            or [Series("MRR", [0] * len(growth.days))],
            value_format=money,
        ),
        bar_chart(
            title="Donations by month, net of refunds",
            labels=[_month(month) for month in donations.periods],
            series=[
                Series(f"Donations ({currency.upper()})", _main_unit(values))
                for currency, values in sorted(donations.amounts.items())
            ]
            or [Series("Donations", [0] * len(donations.periods))],
            value_format=money,
        ),
        new_and_lost,
    ]


def conversion_charts(*, article: Article, with_money: bool = True) -> list[Chart]:
    """What the article converted: readers, and (`with_money`) the money they brought."""
    figures = article_conversions(article=article)
    readers = bar_chart(
        title=f"Readers “{article.title}” converted",
        labels=["Signed up", "Upgraded to paid", "Donated"],
        series=[Series("Readers", [figures.signups, figures.upgrades, figures.donations])],
    )
    if not with_money:
        return [readers]
    labels: list[str] = []
    values: list[float] = []
    for currency, cents in sorted(figures.donated.items()):
        labels.append(f"Donated ({currency.upper()})")
        values.append(cents / 100)
    for currency, cents in sorted(figures.mrr.items()):
        labels.append(f"MRR of its upgrades ({currency.upper()})")
        values.append(cents / 100)
    money_chart = bar_chart(
        title=f"Money “{article.title}” brought",
        labels=labels,
        series=[Series("Amount", values)],
        value_format=money,
    )
    return [readers, money_chart]


def percent(value: Number) -> str:
    return f"{value:.1f}%"


def short_label(text: str, *, limit: int = _LABEL_CHARACTERS) -> str:
    """A link or a title short enough for a chart's axis and table: no scheme, no www."""
    for prefix in ("https://", "http://"):
        text = text.removeprefix(prefix)
    text = text.removeprefix("www.")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def engagement_charts(*, article: Article, figures: ArticleEngagement) -> list[Chart]:
    """Opens and clicks by day since the send (people, then machines), and the top links."""
    by_day = engagement_by_day(article=article)
    if not by_day.days:
        return []
    charts = [
        line_chart(
            title=f"Opens and clicks of “{article.title}” by day",
            dates=by_day.days,
            series=[
                Series("Opened (people, first open)", by_day.readers_opened),
                Series("Clicked (people, first click)", by_day.readers_clicked),
                Series("Opens by machines", by_day.machine_opens),
                Series("Clicks by machines", by_day.machine_clicks),
            ],
        )
    ]
    top = [link for link in figures.links if link.readers][:TOP_LINKS]
    if top:
        charts.append(
            bar_chart(
                title=f"Top links of “{article.title}”, by readers who clicked",
                labels=[short_label(link.url) for link in top],
                series=[Series("Readers (people)", [link.readers for link in top])],
            )
        )
    return charts


@dataclass(frozen=True)
class ArticleRates:
    article: Article
    figures: EngagementSummary


def recent_rates(*, now: datetime | None = None) -> list[ArticleRates]:
    """The last RATES_ARTICLES articles emailed in RATES_DAYS, oldest first, with figures."""
    since = (now or timezone.now()) - timedelta(days=RATES_DAYS)
    sends = list(
        EmailSend.objects.filter(sent_count__gt=0, started_at__gte=since)
        .select_related("article")
        .order_by("-started_at", "-pk")[:RATES_ARTICLES]
    )
    figures = engagement_by_article(article_ids=[send.article_id for send in sends])
    return [ArticleRates(send.article, figures[send.article_id]) for send in reversed(sends)]


def rates_chart(*, rates: list[ArticleRates]) -> Chart:
    """Each article's open and click rate by people, as a share of the emails delivered."""
    return bar_chart(
        title=f"Open and click rates of the last {RATES_ARTICLES} articles emailed "
        "(people, % of delivered)",
        labels=[short_label(one.article.title) for one in rates],
        series=[
            Series("Opened (people)", [100 * (one.figures.open_rate or 0) for one in rates]),
            Series("Clicked (people)", [100 * (one.figures.click_rate or 0) for one in rates]),
        ],
        value_format=percent,
    )
