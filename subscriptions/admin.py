"""The editor's admin for readers."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.db.models import Count, Exists, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, path
from django.utils import timezone

from subscriptions import admin_billing  # noqa: F401
from subscriptions.admin_search import AddressSearchMixin
from subscriptions.forms import SubscriberAdminForm, SubscriberImportForm
from subscriptions.models import Subscriber, Suppression
from subscriptions.services.access import access_granting_memberships
from subscriptions.services.addresses import email_hash
from subscriptions.services.imports import ImportFileError, import_subscribers_csv
from subscriptions.services.unsubscribe import unsubscribe_subscribers

EXPORT_COLUMNS = [
    "email",
    "name",
    "status",
    "paid",
    "created_at",
    "consent_at",
    "consent_ip",
    "consent_source",
    "confirmed_at",
    "unsubscribed_at",
    "imported_from",
    "stripe_customer_id",
]


class PaidFilter(admin.SimpleListFilter):
    title = "paid or free"
    parameter_name = "paid"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Paid"), ("no", "Free")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Subscriber]) -> QuerySet:
        paid = access_granting_memberships().values("subscriber_id")
        if self.value() == "yes":
            return queryset.filter(pk__in=paid)
        if self.value() == "no":
            return queryset.exclude(pk__in=paid)
        return queryset


class SourceFilter(admin.SimpleListFilter):
    title = "source"
    parameter_name = "source"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        imported = (
            Subscriber.objects.exclude(imported_from="")
            .order_by()
            .values_list("imported_from", flat=True)
            .distinct()
        )
        return [("site", "Signed up on the site"), *((s, f"Imported: {s}") for s in imported)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Subscriber]) -> QuerySet:
        if self.value() == "site":
            return queryset.filter(imported_from="")
        if self.value():
            return queryset.filter(imported_from=self.value())
        return queryset


def _csv_line(values: list[Any]) -> str:
    class _Line:
        def write(self, text: str) -> str:
            return text

    return csv.writer(_Line()).writerow(values)


def subscribers_csv(queryset: QuerySet[Subscriber]) -> Iterator[str]:
    yield _csv_line(EXPORT_COLUMNS)
    for subscriber in queryset.order_by("pk").iterator(chunk_size=2000):
        yield _csv_line([_export_value(subscriber, column) for column in EXPORT_COLUMNS])


def _export_value(subscriber: Subscriber, column: str) -> str:
    if column == "paid":
        return "yes" if getattr(subscriber, "is_paid", False) else "no"
    value = getattr(subscriber, column)
    if value is None:
        return ""
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    # Spreadsheets run cells that start like a formula (CSV injection); OWASP's list
    # includes tab and carriage return. https://owasp.org/www-community/attacks/CSV_Injection
    return f"'{text}" if text[:1] in {"=", "+", "-", "@", "\t", "\r"} else text


@admin.register(Subscriber)
class SubscriberAdmin(AddressSearchMixin, admin.ModelAdmin):
    form = SubscriberAdminForm
    change_list_template = "admin/subscriptions/subscriber/change_list.html"
    list_display = ["email", "name", "status", "paid", "source", "consent_at", "created_at"]
    list_filter = [
        "status",
        PaidFilter,
        SourceFilter,
        ("consent_at", admin.DateFieldListFilter),
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["email__contains", "name", "stripe_customer_id"]
    date_hierarchy = "created_at"
    raw_id_fields = ["user"]
    readonly_fields = [
        "consent_at",
        "consent_ip",
        "consent_source",
        "confirmation_sent_at",
        "confirmed_at",
        "unsubscribed_at",
        "status_reason",
        "imported_from",
        "created_at",
        "updated_at",
    ]
    actions = ["export_csv", "unsubscribe"]
    list_per_page = 100

    def get_queryset(self, request: HttpRequest) -> QuerySet[Subscriber]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                is_paid=Exists(access_granting_memberships().filter(subscriber=OuterRef("pk")))
            )
        )

    @admin.display(boolean=True, ordering="is_paid")
    def paid(self, obj: Subscriber) -> bool:
        return bool(getattr(obj, "is_paid", False))

    @admin.display(description="source", ordering="imported_from")
    def source(self, obj: Subscriber) -> str:
        return f"import: {obj.imported_from}" if obj.imported_from else obj.consent_source

    @admin.action(description="Export selected subscribers as CSV")
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Subscriber]) -> Any:
        stamp = timezone.now().strftime("%Y-%m-%d")
        response = StreamingHttpResponse(subscribers_csv(queryset), content_type="text/csv")
        response["Content-Disposition"] = f'attachment; filename="subscribers-{stamp}.csv"'
        return response

    @admin.action(description="Unsubscribe selected subscribers", permissions=["change"])
    def unsubscribe(self, request: HttpRequest, queryset: QuerySet[Subscriber]) -> None:
        changed = unsubscribe_subscribers(
            subscriber_ids=list(queryset.values_list("pk", flat=True)),
            reason=f"unsubscribed by {request.user} in the admin",
        )
        self.message_user(request, f"Unsubscribed {changed} subscriber(s).", messages.SUCCESS)

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="subscriptions_subscriber_import",
            ),
            path(
                "export/",
                self.admin_site.admin_view(self.export_all_view),
                name="subscriptions_subscriber_export",
            ),
        ]
        return own + super().get_urls()

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        counts = dict(Subscriber.objects.order_by().values_list("status").annotate(n=Count("pk")))
        status_counts = [
            (value, label, counts.get(value, 0)) for value, label in Subscriber.Status.choices
        ]
        return super().changelist_view(
            request, {**(extra_context or {}), "status_counts": status_counts}
        )

    def export_all_view(self, request: HttpRequest) -> HttpResponse:
        """Every subscriber the list shows with its current filters and search."""
        if not self.has_view_permission(request):
            return redirect("admin:index")
        try:
            queryset = self.get_changelist_instance(request).get_queryset(request)
        except IncorrectLookupParameters:
            return redirect("admin:subscriptions_subscriber_changelist")
        return self.export_csv(request, queryset)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return redirect("admin:index")
        form = SubscriberImportForm(request.POST or None, request.FILES or None)
        report = None
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["csv_file"]
            try:
                report = import_subscribers_csv(
                    stream=upload, file=upload.name, source="admin import"
                )
            except ImportFileError as exc:
                form.add_error("csv_file", str(exc))
            else:
                level = messages.WARNING if report.rejected else messages.SUCCESS
                self.message_user(
                    request,
                    f"Imported {report.created} new subscriber(s); "
                    f"{report.unchanged} already present; {report.rejected} row(s) rejected.",
                    level,
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Import subscribers from CSV",
            "form": form,
            "report": report,
        }
        return render(request, "admin/subscriptions/subscriber/import.html", context)


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    list_display = ["email_hash", "reason", "created_at"]
    list_filter = ["reason"]
    search_fields = ["email_hash"]
    readonly_fields = ["email_hash", "reason", "created_at"]
    search_help_text = "Search by the full email address: it is hashed before the lookup."

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Suppression], search_term: str
    ) -> tuple[QuerySet[Suppression], bool]:
        if "@" in search_term:
            return queryset.filter(email_hash=email_hash(search_term)), False
        return super().get_search_results(request, queryset, search_term)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
