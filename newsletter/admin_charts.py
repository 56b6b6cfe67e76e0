"""The charts of the admin: growth and money on the home page, conversions on an article.

The figures come from `subscriptions.services.growth`; the drawing from
`newsletter.services.charts`. Money is charted in the currency's main unit (dollars,
not cents), one series per currency, since amounts in two currencies do not add up.
"""

from __future__ import annotations

from datetime import date, datetime

from django.core.cache import cache

from newsletter.models import Article
from newsletter.services.attribution import article_conversions
from newsletter.services.charts import Chart, Number, Series, bar_chart, line_chart
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


def money(value: Number) -> str:
    return f"{value:,.2f}"


def _month(day: date) -> str:
    return f"{day:%b %Y}"


def _main_unit(cents: list[int]) -> list[float]:
    return [value / 100 for value in cents]


def cached_growth_charts() -> list[Chart]:
    """`growth_charts` as of at most GROWTH_CHARTS_SECONDS ago, for the admin home."""
    return cache.get_or_set("admin:growth-charts", growth_charts, GROWTH_CHARTS_SECONDS) or []


def growth_charts(*, now: datetime | None = None) -> list[Chart]:
    """Subscribers (free and paid), MRR, donations by month, new and lost readers."""
    growth = growth_by_day(now=now)
    donations = donations_by_month(now=now)
    recent = slice(-NEW_AND_LOST_DAYS, None)
    charts = [
        line_chart(
            title="Subscribers over the last 12 months",
            dates=growth.days,
            series=[Series("Free", growth.free), Series("Paid", growth.paid)],
        ),
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
        bar_chart(
            title=f"New and lost readers, last {NEW_AND_LOST_DAYS} days",
            labels=[f"{day.day} {day:%b}" for day in growth.days[recent]],
            series=[Series("New", growth.new[recent]), Series("Lost", growth.lost[recent])],
        ),
    ]
    return charts


def conversion_charts(*, article: Article) -> list[Chart]:
    """What the article converted: readers, and the money they brought."""
    figures = article_conversions(article=article)
    readers = bar_chart(
        title=f"Readers “{article.title}” converted",
        labels=["Signed up", "Upgraded to paid", "Donated"],
        series=[Series("Readers", [figures.signups, figures.upgrades, figures.donations])],
    )
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
