"""The editor's admin for publishing."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from newsletter.admin_sending import publish_without_email, send_test_email_to_me
from newsletter.admin_telegram import (
    TelegramPostInline,
    repost_to_telegram,
    telegram_posts_prefetch,
    telegram_status,
    update_telegram_post,
)
from newsletter.forms import ArticleAdminForm, PublicationAdminForm, ScheduleForm
from newsletter.models import Article, Author, Publication, Section
from newsletter.services.content import has_paywall
from newsletter.services.publishing import (
    PublishError,
    publish_article,
    schedule_article,
    unschedule_article,
)
from newsletter.validators import BoundedImageField
from newsletter.views.site import render_article
from subscriptions.admin_search import AddressSearchMixin
from subscriptions.services.notifications import sender_address

# Image uploads are bounded before Django's ImageField reads them (newsletter/validators.py).
IMAGE_FIELDS: dict[Any, dict[str, Any]] = {models.ImageField: {"form_class": BoundedImageField}}


@admin.register(Publication)
class PublicationAdmin(admin.ModelAdmin):
    formfield_overrides = IMAGE_FIELDS
    """The one publication: the list goes straight to its settings."""

    form = PublicationAdminForm
    readonly_fields = ["from_line"]
    fieldsets = [
        (None, {"fields": ["name", "tagline", "description", "logo", "footer_text"]}),
        ("Sender", {"fields": ["sender_name", "sender_email", "reply_to_email", "from_line"]}),
        (
            "Support and channels",
            {"fields": ["kofi_url", "buymeacoffee_url", "telegram_channel_url"]},
        ),
        (
            "Comments",
            {"fields": ["comment_policy", "comment_digest_enabled", "show_founding_badges"]},
        ),
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="From line")
    def from_line(self, obj: Publication) -> str:
        """The From header every email carries, as mail programs will show it."""
        if not obj.sender_email:
            return f"{settings.DEFAULT_FROM_EMAIL} (DEFAULT_FROM_EMAIL: set a sender address)"
        return sender_address(obj)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        publication = Publication.load()
        return redirect("admin:newsletter_publication_change", publication.pk)


@admin.register(Author)
class AuthorAdmin(AddressSearchMixin, admin.ModelAdmin):
    formfield_overrides = IMAGE_FIELDS
    list_display = ["display_name", "slug", "user"]
    search_fields = ["display_name", "slug", "user__username", "user__email__contains"]
    prepopulated_fields = {"slug": ["display_name"]}
    autocomplete_fields = ["user"]


@admin.register(Section)
class SectionAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "position"]
    list_editable = ["position"]
    search_fields = ["name"]
    prepopulated_fields = {"slug": ["name"]}


@admin.register(Article)
class ArticleAdmin(admin.ModelAdmin):
    formfield_overrides = IMAGE_FIELDS
    form = ArticleAdminForm
    change_form_template = "admin/newsletter/article/change_form.html"
    list_display = ["title", "status_label", "visibility", "section", "when", telegram_status]
    list_filter = ["status", "visibility", "section", "published_at", "publish_at"]
    list_select_related = ["section"]
    search_fields = ["title", "subtitle", "slug", "body"]
    date_hierarchy = "published_at"
    prepopulated_fields = {"slug": ["title"]}
    autocomplete_fields = ["authors", "section"]
    save_on_top = True
    # Status and dates change only through the publishing service (the actions and
    # the buttons on the article page), never by editing the fields.
    readonly_fields = ["status", "published_at", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["title", "slug", "subtitle", "body"]}),
        ("Cover", {"fields": ["cover_image", "cover_caption"]}),
        (
            "Publishing",
            {
                "fields": [
                    "status",
                    "publish_at",
                    "published_at",
                    "visibility",
                    "section",
                    "authors",
                ]
            },
        ),
        (
            "Distribution",
            {"fields": ["email_subject", "email_audience", "post_to_telegram", "comments_enabled"]},
        ),
        (
            "Record",
            {"fields": ["external_id", "created_at", "updated_at"], "classes": ["collapse"]},
        ),
    ]
    actions = [
        "publish_now",
        "schedule_selected",
        "unschedule_selected",
        repost_to_telegram,
        update_telegram_post,
        publish_without_email,
        send_test_email_to_me,
    ]
    inlines = [TelegramPostInline]

    class Media:
        css = {"all": ["newsletter/prose/editor.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Article]:
        # The Telegram column reads each article's posts: one query for the whole page.
        return super().get_queryset(request).prefetch_related(telegram_posts_prefetch())

    def get_fieldsets(self, request: HttpRequest, obj: Article | None = None) -> Any:
        # Read-only fields that other features add (send progress, Telegram status) show
        # up without each of them having to edit the fieldsets.
        fieldsets: list[Any] = list(super().get_fieldsets(request, obj))
        listed = {name for _title, options in fieldsets for name in options["fields"]}
        extra = [name for name in self.get_readonly_fields(request, obj) if name not in listed]
        if extra:
            fieldsets.append(("Distribution status", {"fields": extra}))
        return fieldsets

    def view_on_site(self, obj: Article) -> str:
        # A draft has no public page yet: "View on site" opens the paid preview instead.
        if obj.is_published:
            return obj.get_absolute_url()
        return reverse("admin:newsletter_article_preview", args=[obj.pk]) + "?as=paid"

    @admin.display(description="Status", ordering="status")
    def status_label(self, obj: Article) -> str:
        return obj.get_status_display()

    @admin.display(description="Published / scheduled for", ordering="published_at")
    def when(self, obj: Article) -> Any:
        if obj.status == Article.Status.PUBLISHED:
            return obj.published_at
        if obj.status == Article.Status.SCHEDULED:
            return obj.publish_at
        return "—"

    def save_model(self, request: HttpRequest, obj: Article, form: Any, change: bool) -> None:
        if change:
            # Write only what the form edits. Status and dates belong to the publishing
            # service: a publish landing during this request (the scheduler, another
            # editor) must not be turned back into a draft by the page's stale copy.
            edited = [f.name for f in obj._meta.concrete_fields if f.name in form.fields]
            obj.save(update_fields=[*edited, "updated_at"])
        else:
            super().save_model(request, obj, form, change)
        if obj.visibility != Article.Visibility.PUBLIC and not has_paywall(html=obj.body):
            self.message_user(
                request,
                "This article has no paywall marker, so readers without access see only "
                "its title and subtitle. Insert the paywall (lock button) to give them a "
                "free opening.",
                messages.WARNING,
            )

    # --- Publishing: every path goes through newsletter.services.publishing ----------

    @admin.action(description="Publish now", permissions=["change"])
    def publish_now(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        published = 0
        for article in queryset:
            try:
                published += publish_article(article=article).newly_published
            except PublishError as exc:
                self.message_user(request, f"{article}: {exc}", messages.ERROR)
        if published:
            self.message_user(request, f"Published {published} article(s).", messages.SUCCESS)

    @admin.action(description="Schedule at their 'publish at' time", permissions=["change"])
    def schedule_selected(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        scheduled = 0
        for article in queryset:
            if article.publish_at is None:
                self.message_user(request, f"{article}: set 'Publish at' first.", messages.ERROR)
                continue
            try:
                schedule_article(article=article, publish_at=article.publish_at)
            except PublishError as exc:
                self.message_user(request, f"{article}: {exc}", messages.ERROR)
            else:
                scheduled += 1
        if scheduled:
            self.message_user(request, f"Scheduled {scheduled} article(s).", messages.SUCCESS)

    @admin.action(description="Unschedule (back to draft)", permissions=["change"])
    def unschedule_selected(self, request: HttpRequest, queryset: QuerySet[Article]) -> None:
        for article in queryset.filter(status=Article.Status.SCHEDULED):
            try:
                unschedule_article(article=article)
            except PublishError as exc:  # published by the scheduler in the meantime
                self.message_user(request, f"{article}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{article} is a draft again.", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        own = [
            ("preview", self.preview_view),
            ("publish", self.publish_view),
            ("schedule", self.schedule_view),
        ]
        return [
            *(
                path(f"<int:object_id>/{name}/", view(func), name=f"newsletter_article_{name}")
                for name, func in own
            ),
            *super().get_urls(),
        ]

    def _article_for_change(self, request: HttpRequest, object_id: int) -> Article:
        article = get_object_or_404(Article, pk=object_id)
        if not self.has_change_permission(request, article):
            raise PermissionDenied
        return article

    def _back_to(self, article: Article) -> HttpResponseRedirect:
        return redirect("admin:newsletter_article_change", article.pk)

    def preview_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """The article as readers will see it, published or not: free or paid view."""
        article = get_object_or_404(Article, pk=object_id)
        if not self.has_view_permission(request, article):
            raise PermissionDenied
        as_paid = request.GET.get("as") == "paid"
        label = "what a reader with access sees" if as_paid else "what a reader without access sees"
        return render_article(request, article=article, full=as_paid, preview=label)

    def publish_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        return require_POST(self._publish)(request, object_id)

    def _publish(self, request: HttpRequest, object_id: int) -> HttpResponse:
        article = self._article_for_change(request, object_id)
        try:
            result = publish_article(article=article)
        except PublishError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return self._back_to(article)
        if result.newly_published:
            self.message_user(
                request,
                format_html(
                    'Published. <a href="{}">View it on the site</a>.',
                    article.get_absolute_url(),
                ),
                messages.SUCCESS,
            )
        else:
            self.message_user(request, "This article was already published.", messages.INFO)
        return self._back_to(article)

    def schedule_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        return require_POST(self._schedule)(request, object_id)

    def _schedule(self, request: HttpRequest, object_id: int) -> HttpResponse:
        article = self._article_for_change(request, object_id)
        form = ScheduleForm(request.POST)
        if not form.is_valid():
            self.message_user(request, "Pick a date and time to schedule.", messages.ERROR)
            return self._back_to(article)
        try:
            article = schedule_article(article=article, publish_at=form.cleaned_data["publish_at"])
        except PublishError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            assert article.publish_at is not None
            when = timezone.localtime(article.publish_at).strftime("%Y-%m-%d %H:%M %Z")
            self.message_user(request, f"Scheduled for {when}.", messages.SUCCESS)
        return self._back_to(article)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "schedule_form": ScheduleForm(),
            "preview_url": reverse("admin:newsletter_article_preview", args=[object_id])
            if object_id.isdigit()
            else "",
        }
        return super().change_view(request, object_id, form_url, extra_context)


# Admin modules of the distribution and discussion features register themselves here.
from newsletter import admin_comments, admin_sending, admin_telegram  # noqa: E402, F401
