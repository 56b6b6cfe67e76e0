"""The editor's admin for publishing."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from newsletter import telegram
from newsletter.admin_charts import conversion_charts, engagement_charts, may_see_money
from newsletter.admin_sending import publish_without_email, send_test_email_to_me
from newsletter.admin_telegram import (
    TelegramPostInline,
    repost_to_telegram,
    telegram_posts_prefetch,
    telegram_status,
    update_telegram_post,
)
from newsletter.forms import ArticleAdminForm, PublicationAdminForm
from newsletter.models import Article, Author, EmailSend, Section
from newsletter.services import sending
from newsletter.services.content import has_paywall
from newsletter.services.dates import local, long_date, long_datetime
from newsletter.services.engagement import (
    article_engagement,
    clicks_sentence,
    opens_sentence,
)
from newsletter.services.publishing import (
    PublishError,
    publication_audience,
    publish_article,
    schedule_article,
    unschedule_article,
)
from newsletter.views.site import render_article
from publication.emails import sender_address
from publication.models import Publication
from publication.validators import BoundedImageField
from subscriptions.admin_search import AddressSearchMixin

# Image uploads are bounded before Django's ImageField reads them (publication/validators.py).
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
        ("Opens and clicks", {"fields": ["track_engagement"]}),
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
        return redirect("admin:publication_publication_change", publication.pk)


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
    # Fits 1,280 px beside the sidebar and the filters: the section is a filter.
    list_display = ["title", "status_label", "visibility", "when", telegram_status]
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

    @admin.display(description="Published / scheduled", ordering="published_at")
    def when(self, obj: Article) -> Any:
        if obj.status == Article.Status.PUBLISHED and obj.published_at:
            return long_date(obj.published_at)
        if obj.status == Article.Status.SCHEDULED and obj.publish_at:
            return long_datetime(obj.publish_at)
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

    # --- The article page's buttons: save the form first, then confirm -------------
    #
    # "Publish now…", "Schedule…" and "Send a test email to me" submit the article's own
    # form. Django saves it (or shows its errors, and nothing is published); then
    # `response_change` goes on to the confirmation page, which shows what the saved
    # article will do (who gets the email, whether Telegram gets a post), and only its
    # POST publishes. What is published is what the editor saw.

    PAGE_ACTIONS = {
        "_publish": "publish",
        "_schedule": "schedule",
        "_unschedule": "unschedule",
        "_test_email": "test email",
    }

    SAVED_FOR_CONFIRMATION = "newsletter_article_saved_for_confirmation"

    def _page_action(self, request: HttpRequest) -> str | None:
        return next((key for key in self.PAGE_ACTIONS if key in request.POST), None)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Article | None = None,
    ) -> Any:
        action = self._page_action(request) if request.method == "POST" else None
        if action is not None:
            # The form did not validate: nothing was saved, published or sent.
            done = {
                "_publish": "published",
                "_schedule": "scheduled",
                "_unschedule": "unscheduled",
                "_test_email": "sent as a test",
            }[action]
            self.message_user(
                request,
                f"Not saved and not {done}: correct the errors shown below, then press the "
                "button again.",
                messages.ERROR,
            )
        context["publication_time_zone"] = settings.TIME_ZONE
        return super().render_change_form(request, context, add, change, form_url, obj)

    def response_add(
        self, request: HttpRequest, obj: Article, post_url_continue: str | None = None
    ) -> HttpResponse:
        response = self._after_save(request, obj)
        return response or super().response_add(request, obj, post_url_continue)

    def response_change(self, request: HttpRequest, obj: Article) -> HttpResponse:
        return self._after_save(request, obj) or super().response_change(request, obj)

    def _after_save(self, request: HttpRequest, obj: Article) -> HttpResponse | None:
        action = self._page_action(request)
        if action in ("_publish", "_schedule"):
            # The confirmation says "Your changes are saved" only after this save, not
            # when its address is opened directly.
            request.session[self.SAVED_FOR_CONFIRMATION] = obj.pk
        if action == "_publish":
            return redirect("admin:newsletter_article_publish", obj.pk)
        if action == "_schedule":
            if obj.publish_at is None:
                self.message_user(
                    request,
                    "Saved. To schedule, set “Publish at” first, then press Schedule again.",
                    messages.ERROR,
                )
                return self._back_to(obj)
            return redirect("admin:newsletter_article_schedule", obj.pk)
        if action == "_unschedule":
            try:
                unschedule_article(article=obj)
            except PublishError as exc:
                self.message_user(request, f"Saved, but: {exc}", messages.ERROR)
            else:
                self.message_user(request, "Saved; the article is a draft again.")
            return self._back_to(obj)
        if action == "_test_email":
            to_email = getattr(request.user, "email", "")
            try:
                sending.send_test_email(article=obj, to_email=to_email)
            except sending.SendError as exc:
                self.message_user(request, f"Saved, but no test was sent: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Saved, and sent a test email to {to_email} (the paid readers' version).",
                    messages.SUCCESS,
                )
            return self._back_to(obj)
        return None

    def _confirmation(
        self, request: HttpRequest, article: Article, *, kind: str, **extra: Any
    ) -> HttpResponse:
        just_saved = request.session.pop(self.SAVED_FOR_CONFIRMATION, None) == article.pk
        when = zone = ""
        if article.publish_at is not None:
            when = long_datetime(article.publish_at)
            # "09:30 EDT (America/New_York)", but "14:14 UTC" rather than "UTC (UTC)".
            if local(article.publish_at).tzname() != str(settings.TIME_ZONE):
                zone = str(settings.TIME_ZONE)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": article,
            "just_saved": just_saved,
            "publish_when": when,
            "publish_zone": zone,
            "title": f"{kind.capitalize()} “{article.title}”?",
            "kind": kind,
            "audience": publication_audience(article=article),
            "publication_time_zone": settings.TIME_ZONE,
            **extra,
        }
        return TemplateResponse(request, "admin/newsletter/article/confirm_publish.html", context)

    def publish_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        article = self._article_for_change(request, object_id)
        if request.method != "POST":
            if article.is_published:
                self.message_user(request, "This article is already published.", messages.INFO)
                return self._back_to(article)
            return self._confirmation(request, article, kind="publish")
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
        article = self._article_for_change(request, object_id)
        if article.publish_at is None:
            self.message_user(request, "Set “Publish at” first, then schedule.", messages.ERROR)
            return self._back_to(article)
        if request.method != "POST":
            return self._confirmation(request, article, kind="schedule")
        try:
            article = schedule_article(article=article, publish_at=article.publish_at)
        except PublishError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            assert article.publish_at is not None
            self.message_user(
                request,
                f"Scheduled for {long_datetime(article.publish_at)}.",
                messages.SUCCESS,
            )
        return self._back_to(article)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """A new article: its author is the editor writing it, Telegram as configured."""
        initial: dict[str, Any] = dict(super().get_changeform_initial_data(request))
        author = Author.objects.filter(user__pk=request.user.pk or 0).first()
        if author is not None:
            initial.setdefault("authors", [author.pk])
        initial.setdefault("post_to_telegram", telegram.is_configured())
        return initial

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # Only ASCII digits name an article: str.isdigit() also takes "²" and "٣", which
        # the ORM and the URL resolver refuse with a 500.
        pk = int(object_id) if re.fullmatch("[0-9]+", object_id) else None
        article = Article.objects.filter(pk=pk).first() if pk is not None else None
        extra_context = {
            **(extra_context or {}),
            "preview_url": reverse("admin:newsletter_article_preview", args=[pk])
            if pk is not None
            else "",
            "conversion_charts": conversion_charts(
                article=article, with_money=may_see_money(request.user)
            )
            if article
            else [],
        }
        if pk is not None and EmailSend.objects.filter(article_id=pk).exists():
            figures = article_engagement(article=Article(pk=pk))
            extra_context["engagement"] = figures
            if article is not None:
                extra_context["engagement_charts"] = engagement_charts(
                    article=article, figures=figures
                )
            extra_context["engagement_opens"] = opens_sentence(figures)
            extra_context["engagement_clicks"] = clicks_sentence(figures)
        return super().change_view(request, object_id, form_url, extra_context)


# Admin modules of the distribution and discussion features register themselves here.
from newsletter import (  # noqa: E402, F401
    admin_comments,
    admin_images,
    admin_sending,
    admin_telegram,
)
