"""Telegram in the admin: each article's post status, repost and update actions.

`telegram_status`, `repost_to_telegram` and `update_telegram_post` are added to
ArticleAdmin (newsletter/admin.py); `TelegramPostInline` shows the posts on the
article's page. Every action calls a service in newsletter/services/telegram_posting.py.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin, messages
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from newsletter import telegram
from newsletter.models import Article, TelegramPost
from newsletter.services import telegram_posting

TELEGRAM_OFF = "Telegram posting is off: set TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID."


def _post_status(post: TelegramPost) -> SafeString:
    if post.status == TelegramPost.Status.SENT:
        url = telegram_posting.telegram_message_url(
            telegram_post=post, channel_url=getattr(post, "channel_url", None)
        )
        label = "Posted (edited)" if post.edited_at else "Posted"
        shown = (
            format_html('<a href="{}" target="_blank" rel="noopener">{} ↗</a>', url, label)
            if url
            else format_html("{} (message {})", label, post.message_id)
        )
        if post.last_error:
            return format_html("{}<br><small>{}</small>", shown, post.last_error)
        return shown
    if post.status == TelegramPost.Status.FAILED:
        return format_html('<span style="color:#ba2121">Failed: {}</span>', post.last_error)
    if post.status == TelegramPost.Status.SENDING:
        if telegram_posting.is_stuck(telegram_post=post):
            return format_html(
                '<span style="color:#ba2121">{}</span>',
                "Stuck: the worker stopped while posting. Check the channel, then repost if "
                "the post is not there.",
            )
        return format_html("{}", "Posting…")
    if post.last_error:
        return format_html("Queued, retrying after: {}", post.last_error)
    return format_html("{}", "Queued")


def telegram_posts_prefetch() -> Prefetch:
    """For ArticleAdmin's queryset: every article's posts, with what links them, at once."""
    return Prefetch(
        "telegram_posts", queryset=telegram_posting.with_channel_url(TelegramPost.objects.all())
    )


def _article_post(article: Article) -> TelegramPost | None:
    # .all() uses the changelist's telegram_posts_prefetch() when present.
    posts = list(article.telegram_posts.all())
    chat_id = telegram.configured_chat_id()
    for post in posts:
        if post.chat_id == chat_id:
            return post
    return max(posts, key=lambda post: post.created_at) if posts else None


@admin.display(description="Telegram")
def telegram_status(article: Article) -> str:
    post = _article_post(article)
    if post is not None:
        return _post_status(post)
    if not telegram.is_configured():
        return "Off (no bot token or chat)"
    if not article.post_to_telegram:
        return "Not to be posted"
    if article.status == Article.Status.PUBLISHED:
        return "Not posted"
    return "Posted on publish"


def _queue_for_each(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    articles: QuerySet[Article],
    *,
    queue: Callable[..., TelegramPost],
    done: str,
) -> None:
    """Run `queue(article=...)` for each article; say why any was refused, and how many went."""
    if not telegram.is_configured():
        modeladmin.message_user(request, TELEGRAM_OFF, messages.ERROR)
        return
    queued = 0
    for article in articles:
        try:
            queue(article=article)
        except telegram_posting.TelegramPostingError as exc:
            modeladmin.message_user(request, str(exc), messages.WARNING)
        else:
            queued += 1
    if queued:
        modeladmin.message_user(request, done.format(queued), messages.SUCCESS)


@admin.action(description="Post to Telegram (repost after a failure)", permissions=["change"])
def repost_to_telegram(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Article]
) -> None:
    _queue_for_each(
        modeladmin,
        request,
        queryset,
        queue=telegram_posting.repost_to_telegram,
        done="{} article(s) queued for posting to Telegram.",
    )


@admin.action(description="Update the Telegram post (title and teaser)", permissions=["change"])
def update_telegram_post(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Article]
) -> None:
    _queue_for_each(
        modeladmin,
        request,
        queryset,
        queue=telegram_posting.request_telegram_update,
        done="{} Telegram post(s) queued for updating.",
    )


class TelegramPostInline(admin.TabularInline):
    model = TelegramPost
    extra = 0
    can_delete = False
    fields = ["chat_id", "status_shown", "attempts", "posted_at", "edited_at"]
    readonly_fields = ["chat_id", "status_shown", "attempts", "posted_at", "edited_at"]
    verbose_name = "Telegram post"

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[TelegramPost]:
        return telegram_posting.with_channel_url(super().get_queryset(request))

    @admin.display(description="Status")
    def status_shown(self, post: TelegramPost) -> str:
        return _post_status(post)


@admin.register(TelegramPost)
class TelegramPostAdmin(admin.ModelAdmin):
    list_display = ["article", "chat_id", "status_shown", "attempts", "posted_at", "edited_at"]
    list_filter = ["status", "kind"]
    search_fields = ["article__title", "chat_id", "last_error"]
    list_select_related = ["article"]
    readonly_fields = [
        "article",
        "chat_id",
        "status",
        "status_shown",
        "kind",
        "message_id",
        "attempts",
        "last_error",
        "created_at",
        "claimed_at",
        "retry_at",
        "posted_at",
        "edited_at",
    ]
    actions = ["repost", "update_post"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # posts are made by publishing, or by the article's repost action

    def get_queryset(self, request: HttpRequest) -> QuerySet[TelegramPost]:
        return telegram_posting.with_channel_url(super().get_queryset(request))

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, object] | None = None
    ) -> HttpResponse:
        if not telegram.is_configured():
            self.message_user(request, TELEGRAM_OFF, messages.WARNING)
        return super().changelist_view(request, extra_context)

    @admin.display(description="Status")
    def status_shown(self, post: TelegramPost) -> str:
        return _post_status(post)

    @admin.action(description="Repost after a failure", permissions=["change"])
    def repost(self, request: HttpRequest, queryset: QuerySet[TelegramPost]) -> None:
        articles = Article.objects.filter(pk__in=queryset.values("article_id"))
        repost_to_telegram(self, request, articles)

    @admin.action(description="Update the post (title and teaser)", permissions=["change"])
    def update_post(self, request: HttpRequest, queryset: QuerySet[TelegramPost]) -> None:
        articles = Article.objects.filter(pk__in=queryset.values("article_id"))
        update_telegram_post(self, request, articles)
