"""The admin's home: how the last articles did, the audience this month, what is waiting.

Also the grouping of the admin's models into what an editor looks for: Writing,
Audience, Money and Settings, instead of one heading per Django app.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from newsletter.admin_charts import cached_growth_charts, growth_charts, rates_chart, recent_rates
from newsletter.models import Article, EmailSend
from newsletter.services.charts import Chart
from newsletter.services.dates import local
from newsletter.services.engagement import EngagementSummary, engagement_by_article
from subscriptions.models import Subscriber
from subscriptions.services.access import access_granting_memberships
from subscriptions.services.growth import ArticleConversions, conversions_by_source

RECENT_ARTICLES = 5

# (group, [app_label.ModelName, ...]) in the order the home page and sidebar show them.
MODEL_GROUPS: list[tuple[str, list[str]]] = [
    (
        "Writing",
        [
            "newsletter.Article",
            "newsletter.BodyImage",
            "newsletter.Section",
            "newsletter.Author",
            "newsletter.Comment",
            "newsletter.CommentBan",
        ],
    ),
    (
        "Audience",
        [
            "subscriptions.Subscriber",
            "newsletter.EmailSend",
            "newsletter.Delivery",
            "newsletter.TelegramPost",
            "subscriptions.Suppression",
        ],
    ),
    (
        "Money",
        [
            "subscriptions.Membership",
            "subscriptions.Plan",
            "subscriptions.Offer",
            "subscriptions.Gift",
            "subscriptions.GroupInvite",
            "subscriptions.Donation",
            "subscriptions.StripeEvent",
        ],
    ),
    ("Settings", ["publication.Publication"]),
]


def grouped_app_list(app_list: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Django's per-app list regrouped; models not named above go under Settings."""
    models = {
        f"{app['app_label']}.{model['object_name']}": model
        for app in app_list
        for model in app["models"]
    }
    groups = []
    placed: set[str] = set()
    for name, members in MODEL_GROUPS:
        entries = [models[m] for m in members if m in models]
        placed.update(m for m in members if m in models)
        if name == "Settings":
            entries += [model for key, model in models.items() if key not in placed]
        if entries:
            groups.append(
                {
                    "name": name,
                    "app_label": name.lower(),
                    "app_url": entries[0].get("admin_url") or "",
                    "has_module_perms": True,
                    "models": entries,
                }
            )
    return groups


@dataclass(frozen=True)
class ArticleResult:
    article: Article
    email_send: EmailSend | None
    telegram: str  # "sent", "failed", "pending", "" (not posted)
    conversions: ArticleConversions = field(default_factory=ArticleConversions)
    engagement: EngagementSummary | None = None  # None: not emailed

    @property
    def opened(self) -> str:
        """ "12 (40%)": readers who opened, and their share of the emails delivered."""
        if self.engagement is None:
            return ""
        return _with_rate(self.engagement.opened_readers, self.engagement.open_rate)

    @property
    def clicked(self) -> str:
        if self.engagement is None:
            return ""
        return _with_rate(self.engagement.clicked_readers, self.engagement.click_rate)


def _with_rate(readers: int, rate: float | None) -> str:
    return f"{readers:,} ({rate:.0%})" if rate is not None else f"{readers:,}"


@dataclass(frozen=True)
class EditorDashboard:
    month_start: datetime
    recent: list[ArticleResult]
    active_subscribers: int
    new_subscribers_this_month: int
    paid_members: int
    new_paid_members_this_month: int
    drafts: QuerySet[Article]
    draft_count: int
    scheduled: QuerySet[Article]
    charts: list[Chart] = field(default_factory=list)
    rates_chart: Chart | None = None  # None: no article emailed in the last 12 months


def editor_dashboard(*, now: datetime | None = None, with_money: bool = True) -> EditorDashboard:
    asked_now = now is not None
    now = now or timezone.now()
    # The month as the publication counts it: from the 1st in its time zone.
    start = local(now).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    recent_articles = (
        Article.objects.filter(status=Article.Status.PUBLISHED)
        .select_related("email_send")
        .prefetch_related("telegram_posts")
        .order_by("-published_at")[:RECENT_ARTICLES]
    )
    recent = []
    recent_list = list(recent_articles)
    conversions = conversions_by_source(
        source_article_ids=[article.pk for article in recent_list], now=now
    )
    engagement = engagement_by_article(article_ids=[article.pk for article in recent_list])
    for article in recent_list:
        try:
            email_send: EmailSend | None = article.email_send
        except EmailSend.DoesNotExist:
            email_send = None
        posts = list(article.telegram_posts.all())
        recent.append(
            ArticleResult(
                article=article,
                email_send=email_send,
                telegram=posts[0].get_status_display() if posts else "",
                conversions=conversions[article.pk],
                engagement=engagement.get(article.pk),
            )
        )
    active = Subscriber.objects.filter(status=Subscriber.Status.ACTIVE)
    granting = access_granting_memberships(now=now)
    drafts = Article.objects.filter(status=Article.Status.DRAFT).order_by("-updated_at")
    rates = recent_rates(now=now)
    return EditorDashboard(
        month_start=start,
        recent=recent,
        active_subscribers=active.count(),
        new_subscribers_this_month=active.filter(confirmed_at__gte=start).count(),
        paid_members=granting.values("subscriber_id").distinct().count(),
        new_paid_members_this_month=granting.filter(created_at__gte=start)
        .values("subscriber_id")
        .distinct()
        .count(),
        drafts=drafts[:RECENT_ARTICLES],
        draft_count=drafts.count(),
        scheduled=Article.objects.filter(status=Article.Status.SCHEDULED).order_by("publish_at"),
        # Drawn for this moment when asked about one (a test, a report), else cached.
        charts=growth_charts(now=now, with_money=with_money)
        if asked_now
        else cached_growth_charts(with_money=with_money),
        rates_chart=rates_chart(rates=rates) if rates else None,
    )
