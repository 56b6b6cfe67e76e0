"""Moderation of the discussion: the queue of recent comments, hiding, banning."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import truncatechars
from django.utils.html import format_html

from newsletter.models import Comment, CommentBan
from newsletter.services import comments as comment_service
from subscriptions.admin_search import AddressSearchMixin


class ReplyFilter(admin.SimpleListFilter):
    title = "kind"
    parameter_name = "kind"

    def lookups(self, request, model_admin):
        return [("comment", "Top-level comments"), ("reply", "Replies")]

    def queryset(self, request, queryset):
        if self.value() == "comment":
            return queryset.filter(parent__isnull=True)
        if self.value() == "reply":
            return queryset.filter(parent__isnull=False)
        return queryset


class BannedWriterFilter(admin.SimpleListFilter):
    title = "writer banned"
    parameter_name = "banned"

    def lookups(self, request, model_admin):
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(user__comment_ban__isnull=False)
        if self.value() == "no":
            return queryset.filter(user__comment_ban__isnull=True)
        return queryset


@admin.register(Comment)
class CommentAdmin(AddressSearchMixin, admin.ModelAdmin):
    """The moderation queue: newest first, filtered by status, kind, article and date."""

    list_display = [
        "excerpt",
        "writer",
        "editor_reply",
        "article_link",
        "kind",
        "status",
        "created_at",
    ]
    list_display_links = ["excerpt"]
    list_filter = [
        "status",
        "is_editor_reply",
        ReplyFilter,
        BannedWriterFilter,
        "created_at",
        ("article", admin.RelatedOnlyFieldListFilter),
    ]
    search_fields = ["body", "user__email__contains", "user__first_name", "article__title"]
    date_hierarchy = "created_at"
    ordering = ["-created_at"]
    list_select_related = ["user", "article", "user__comment_ban"]
    list_per_page = 50
    actions = ["hide", "unhide", "ban_writers", "ban_writers_and_hide"]
    fields = [
        "article",
        "user",
        "parent",
        "body",
        "status",
        "is_editor_reply",
        "created_at",
        "edited_at",
        "authors_notified_at",
    ]
    # Status too: it changes only through the actions, which call the moderation
    # services (a status typed in here could, say, revive a comment its writer deleted).
    readonly_fields = [
        "article",
        "user",
        "parent",
        "body",
        "status",
        "is_editor_reply",
        "created_at",
        "edited_at",
        "authors_notified_at",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Editors reply on the article page, under their own name, like readers do.
        return False

    @admin.display(description="Comment")
    def excerpt(self, obj: Comment) -> str:
        if obj.status == Comment.Status.DELETED:
            return "(deleted by its writer)"
        return truncatechars(obj.body, 120)

    @admin.display(description="Writer", ordering="user__email")
    def writer(self, obj: Comment) -> str:
        if obj.user is None:
            return "(deleted account)"
        name = obj.user.first_name or obj.user.get_username()
        banned = " (banned)" if hasattr(obj.user, "comment_ban") else ""
        return f"{name} <{obj.user.email}>{banned}"

    @admin.display(description="Editor", boolean=True, ordering="is_editor_reply")
    def editor_reply(self, obj: Comment) -> bool:
        return obj.is_editor_reply

    @admin.display(description="Article", ordering="article__title")
    def article_link(self, obj: Comment) -> str:
        return format_html(
            '<a href="/p/{}/#comment-{}">{}</a>', obj.article.slug, obj.pk, obj.article.title
        )

    @admin.display(description="Kind")
    def kind(self, obj: Comment) -> str:
        return "Reply" if obj.parent_id else "Comment"

    @admin.action(description="Hide selected comments from readers", permissions=["change"])
    def hide(self, request: HttpRequest, queryset: QuerySet[Comment]) -> None:
        count = comment_service.hide_comments(comments=queryset)
        self.message_user(request, f"Hid {count} comment(s).", messages.SUCCESS)

    @admin.action(description="Show selected comments to readers again", permissions=["change"])
    def unhide(self, request: HttpRequest, queryset: QuerySet[Comment]) -> None:
        count = comment_service.unhide_comments(comments=queryset)
        self.message_user(request, f"{count} comment(s) visible again.", messages.SUCCESS)

    def _ban(self, request: HttpRequest, queryset: QuerySet[Comment], *, hide: bool) -> None:
        writers = get_user_model().objects.filter(pk__in=queryset.values("user_id"), is_staff=False)
        banned = 0
        for writer in writers:
            comment_service.ban_commenter(
                user=writer,
                banned_by=request.user,  # type: ignore[arg-type]
                reason="Banned from the comment moderation queue.",
                hide_their_comments=hide,
            )
            banned += 1
        self.message_user(request, f"Banned {banned} reader(s) from commenting.", messages.SUCCESS)

    @admin.action(description="Ban the writers from commenting", permissions=["change"])
    def ban_writers(self, request: HttpRequest, queryset: QuerySet[Comment]) -> None:
        self._ban(request, queryset, hide=False)

    @admin.action(description="Ban the writers and hide all their comments", permissions=["change"])
    def ban_writers_and_hide(self, request: HttpRequest, queryset: QuerySet[Comment]) -> None:
        self._ban(request, queryset, hide=True)


@admin.register(CommentBan)
class CommentBanAdmin(AddressSearchMixin, admin.ModelAdmin):
    list_display = ["user", "reason", "banned_by", "created_at"]
    search_fields = ["user__email__contains", "user__first_name", "reason"]
    raw_id_fields = ["user"]
    readonly_fields = ["banned_by", "created_at"]
    list_select_related = ["user", "banned_by"]

    def save_model(self, request, obj, form, change):
        if not change:
            obj.banned_by = request.user
        super().save_model(request, obj, form, change)
