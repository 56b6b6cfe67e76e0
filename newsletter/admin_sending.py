"""The editors' view of email sends: live progress, errors, pause/resume/cancel/retry.

Also the article actions "Publish without email" and "Send a test email to myself",
which newsletter/admin.py lists on ArticleAdmin.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from newsletter.models import Article, Delivery, EmailSend
from newsletter.services import sending
from newsletter.services.dates import long_datetime
from newsletter.services.publishing import PublishError, publish_article
from subscriptions.admin_search import AddressSearchMixin

CONTROLS = {
    "pause": (sending.pause_send, "Paused: workers stop after the chunks they hold."),
    "resume": (sending.resume_send, "Resumed."),
    "cancel": (sending.cancel_send, "Cancelled: nobody else will get this email."),
}


@admin.register(EmailSend)
class EmailSendAdmin(admin.ModelAdmin):
    change_form_template = "admin/newsletter/emailsend/change_form.html"
    # Fits 1,280 px beside the sidebar and the filters: the audience is a filter.
    list_display = [
        "article",
        "status",
        "recipient_count",
        "progress",
        "sent_count",
        "failed_count",
        "finished",
    ]
    list_filter = ["status", "audience"]
    list_select_related = ["article"]
    search_fields = ["article__title", "article__slug"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "article",
        "audience",
        "status",
        "recipient_count",
        "sent_count",
        "failed_count",
        "created_at",
        "started_at",
        "finished_at",
        "last_activity_at",
        "failed_deliveries",
    ]
    actions = ["pause_sends", "resume_sends", "cancel_sends", "retry_failed"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # sends are created by publishing

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the ledger of who got what

    @admin.display(description="Progress")
    def progress(self, obj: EmailSend) -> str:
        done = obj.sent_count + obj.failed_count
        percent = 100 * done // obj.recipient_count if obj.recipient_count else 100
        return f"{percent}%"

    @admin.display(description="Finished", ordering="finished_at")
    def finished(self, obj: EmailSend) -> str:
        return long_datetime(obj.finished_at) if obj.finished_at else "—"

    @admin.display(description="Failed deliveries")
    def failed_deliveries(self, obj: EmailSend) -> str:
        url = reverse("admin:newsletter_delivery_changelist")
        return format_html(
            '<a href="{}?send__id__exact={}&amp;status__exact=failed">Failed deliveries and '
            'their errors</a> · <a href="{}?send__id__exact={}">all deliveries</a>',
            url,
            obj.pk,
            url,
            obj.pk,
        )

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<int:pk>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name="newsletter_emailsend_progress",
            ),
            path(
                "<int:pk>/control/<str:control>/",
                self.admin_site.admin_view(self.control_view),
                name="newsletter_emailsend_control",
            ),
        ]
        return own + super().get_urls()

    def progress_view(self, request: HttpRequest, pk: int) -> JsonResponse:
        """Polled by the change page while the send runs."""
        email_send = get_object_or_404(EmailSend, pk=pk)
        if not self.has_view_permission(request, email_send):
            raise PermissionDenied
        return JsonResponse(sending.send_progress(email_send=email_send).as_dict())

    def control_view(self, request: HttpRequest, pk: int, control: str) -> HttpResponse:
        return require_POST(self._control)(request, pk, control)

    def _control(self, request: HttpRequest, pk: int, control: str) -> HttpResponse:
        email_send = get_object_or_404(EmailSend, pk=pk)
        if not self.has_change_permission(request, email_send):
            raise PermissionDenied
        change_url = reverse("admin:newsletter_emailsend_change", args=[pk])
        try:
            if control == "retry":
                count = sending.retry_failed_deliveries(email_send=email_send)
                self.message_user(request, f"{count} failed deliveries queued again.")
            elif control in CONTROLS:
                action, done = CONTROLS[control]
                action(email_send=email_send)
                self.message_user(request, done)
            else:
                raise PermissionDenied
        except sending.SendError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        return HttpResponseRedirect(change_url)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        email_send = self.get_object(request, object_id)
        extra: dict[str, Any] = {**(extra_context or {})}
        if email_send is not None:
            extra["send_progress"] = sending.send_progress(email_send=email_send)
            extra["progress_url"] = reverse(
                "admin:newsletter_emailsend_progress", args=[email_send.pk]
            )
            extra["controls"] = [
                (name, reverse("admin:newsletter_emailsend_control", args=[email_send.pk, name]))
                for name in self._controls_for(email_send)
            ]
        return super().change_view(request, object_id, form_url, extra)

    @staticmethod
    def _controls_for(email_send: EmailSend) -> list[str]:
        status = email_send.status
        if status in sending.ACTIVE_SEND_STATUSES:
            return ["pause", "cancel"]
        if status == EmailSend.Status.PAUSED:
            return ["resume", "cancel"]
        if email_send.failed_count or status == EmailSend.Status.FAILED:
            return ["retry"]
        return []

    def _apply(self, request: HttpRequest, queryset: QuerySet[EmailSend], action: Any) -> None:
        done = 0
        for email_send in queryset:
            try:
                action(email_send=email_send)
                done += 1
            except sending.SendError as exc:
                self.message_user(request, f"{email_send}: {exc}", messages.WARNING)
        if done:
            self.message_user(request, f"{done} send(s) updated.")

    @admin.action(description="Pause the selected sends", permissions=["change"])
    def pause_sends(self, request: HttpRequest, queryset: QuerySet[EmailSend]) -> None:
        self._apply(request, queryset, sending.pause_send)

    @admin.action(description="Resume the selected sends", permissions=["change"])
    def resume_sends(self, request: HttpRequest, queryset: QuerySet[EmailSend]) -> None:
        self._apply(request, queryset, sending.resume_send)

    @admin.action(description="Cancel the selected sends", permissions=["change"])
    def cancel_sends(self, request: HttpRequest, queryset: QuerySet[EmailSend]) -> None:
        self._apply(request, queryset, sending.cancel_send)

    @admin.action(description="Retry failed deliveries", permissions=["change"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[EmailSend]) -> None:
        self._apply(request, queryset, sending.retry_failed_deliveries)


@admin.register(Delivery)
class DeliveryAdmin(AddressSearchMixin, admin.ModelAdmin):
    """One row per email: read-only; filter a send's failures to see their errors."""

    list_display = [
        "subscriber",
        "send",
        "segment",
        "status",
        "attempts",
        "sent_at",
        "next_attempt_at",
        "last_error",
    ]
    list_filter = ["status", "segment"]
    list_select_related = ["subscriber", "send__article"]
    search_fields = ["subscriber__email__contains", "provider_message_id"]
    show_full_result_count = False  # counting a 100k-row send on every page is wasted work
    list_per_page = 100
    raw_id_fields = ["send", "subscriber"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Delivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Article actions (listed on ArticleAdmin in newsletter/admin.py) ----------------


@admin.action(description="Publish without email", permissions=["change"])
def publish_without_email(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Article]
) -> None:
    published = 0
    for article in queryset:
        try:
            result = publish_article(article=article, send_email=False)
        except PublishError as exc:
            modeladmin.message_user(request, f"{article}: {exc}", messages.ERROR)
            continue
        if result.newly_published:
            published += 1
        else:
            modeladmin.message_user(
                request, f"{article} was already published; nothing changed.", messages.WARNING
            )
    if published:
        modeladmin.message_user(request, f"Published {published} article(s) without email.")


@admin.action(description="Send a test email to myself")
def send_test_email_to_me(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Article]
) -> None:
    to_email = getattr(request.user, "email", "")
    articles = list(queryset[:5])
    try:
        for article in articles:
            sending.send_test_email(article=article, to_email=to_email)
    except sending.SendError as exc:
        modeladmin.message_user(request, str(exc), messages.ERROR)
        return
    modeladmin.message_user(
        request, f"Sent {len(articles)} test email(s) to {to_email} (the paid readers' version)."
    )
