"""Admin for plans, memberships, donations and Stripe events; imported by admin.py."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from subscriptions import stripe_client
from subscriptions.admin_search import AddressSearchMixin
from subscriptions.models import Donation, Gift, GroupInvite, Membership, Offer, Plan, StripeEvent
from subscriptions.services import billing, offers, revenue, stripe_events
from subscriptions.services.access import access_granting_memberships
from subscriptions.services.donations import format_amount
from subscriptions.services.plans import missing_offer
from subscriptions.tasks import process_stripe_event


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "interval",
        "kind",
        "price",
        "trial_days",
        "active",
        "stripe_price_id",
        "position",
    ]
    list_filter = ["active", "interval", "kind"]
    list_editable = ["active", "position"]
    search_fields = ["name", "stripe_price_id"]
    readonly_fields = ["stripe_product_id"]
    actions = ["sync_with_stripe"]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if problem := missing_offer():
            self.message_user(request, problem, messages.WARNING)
        return super().changelist_view(request, extra_context)

    @admin.display(description="Price")
    def price(self, plan: Plan) -> str:
        return format_amount(plan.amount, plan.currency)

    @admin.action(description="Create the missing Stripe prices for all plans")
    def sync_with_stripe(self, request: HttpRequest, queryset: QuerySet[Plan]) -> None:
        try:
            report = billing.sync_stripe_plans()
        except (stripe_client.StripeError, ImproperlyConfigured) as exc:
            self.message_user(request, f"Stripe sync failed: {exc}", messages.ERROR)
            return
        self.message_user(request, "; ".join(report) or "Nothing to do.", messages.SUCCESS)


class AccessFilter(admin.SimpleListFilter):
    title = "grants access now"
    parameter_name = "grants_access"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Yes"), ("no", "No")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Membership]) -> QuerySet:
        granting = access_granting_memberships().values("pk")
        if self.value() == "yes":
            return queryset.filter(pk__in=granting)
        if self.value() == "no":
            return queryset.exclude(pk__in=granting)
        return queryset


@admin.register(Membership)
class MembershipAdmin(AddressSearchMixin, admin.ModelAdmin):
    change_list_template = "admin/subscriptions/membership/change_list.html"
    list_display = [
        "subscriber",
        "kind",
        "plan",
        "founding",
        "status",
        "current_period_end",
        "expires_at",
        "cancel_at_period_end",
        "foreign_price",
        "created_at",
    ]
    list_filter = [
        AccessFilter,
        "kind",
        "status",
        "plan__kind",
        "offer",
        "plan",
        "foreign_price",
        "cancel_at_period_end",
    ]
    search_fields = ["subscriber__email__contains", "stripe_subscription_id"]
    autocomplete_fields = ["subscriber"]
    list_select_related = ["subscriber", "plan"]
    date_hierarchy = "created_at"
    readonly_fields = [
        "stripe_synced_at",
        "reminder_sent_at",
        "canceled_at",
        "created_at",
        "stripe_price_id",
        "foreign_price",
        "group",
        "quantity",
        "unit_amount",
        "offer",
        "discount_percent_off",
        "discount_amount_off",
        "discount_ends_at",
        "trial_end",
        "trial_reminder_sent_at",
    ]
    fieldsets = [
        (None, {"fields": ["subscriber", "kind", "plan", "status"]}),
        (
            "Trial, offer, seats",
            {
                "fields": [
                    "trial_end",
                    "trial_reminder_sent_at",
                    "offer",
                    "discount_percent_off",
                    "discount_amount_off",
                    "discount_ends_at",
                    "quantity",
                    "unit_amount",
                    "group",
                ],
                "classes": ["collapse"],
            },
        ),
        (
            "Complimentary and gift",
            {
                "fields": ["starts_at", "expires_at", "reminder_sent_at"],
                "description": "Grant a comp or gift membership: choose the kind, status "
                "Active and an expiry (empty for no end). Readers get a reminder a week "
                "before it ends.",
            },
        ),
        (
            "Stripe",
            {
                "fields": [
                    "stripe_subscription_id",
                    "stripe_price_id",
                    "foreign_price",
                    "current_period_start",
                    "current_period_end",
                    "cancel_at_period_end",
                    "canceled_at",
                    "stripe_synced_at",
                ],
                "description": "Mirrored from Stripe by the webhook; change it in Stripe.",
            },
        ),
    ]

    @admin.display(description="Founding", boolean=True)
    def founding(self, membership: Membership) -> bool:
        return bool(membership.plan and membership.plan.kind == Plan.Kind.FOUNDING)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        # Memberships added by hand are granted ones; Stripe's arrive by webhook.
        return {
            "kind": Membership.Kind.COMP,
            "status": Membership.Status.ACTIVE,
            **super().get_changeform_initial_data(request),
        }

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and obj.kind == Membership.Kind.STRIPE:
            # Stripe is the source of truth; edits here would be overwritten.
            fields += ["kind", "status", "stripe_subscription_id", "current_period_start"]
            fields += ["current_period_end"]
            fields += ["cancel_at_period_end", "plan"]
        return fields

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        summary = revenue.revenue_summary()
        extra_context = {
            **(extra_context or {}),
            "revenue": summary,
            "mrr_display": _money(summary.mrr),
            "donations_display": _money(summary.donations_this_month),
            "gift_revenue_display": _money(summary.gift_revenue_this_month),
            "founding_display": _money(summary.founding_revenue_yearly),
        }
        return super().changelist_view(request, extra_context=extra_context)


def _money(amounts: dict[str, int]) -> str:
    if not amounts:
        return format_amount(0, "usd")
    return " + ".join(format_amount(v, c) for c, v in sorted(amounts.items()))


class OfferAdminForm(forms.ModelForm):
    class Meta:
        model = Offer
        fields = [
            "name",
            "code",
            "kind",
            "percent_off",
            "amount_off",
            "currency",
            "duration",
            "duration_in_months",
            "trial_days",
            "plan",
            "ends_at",
            "max_redemptions",
            "active",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("code"):
            cleaned["code"] = offers.normalize_code(cleaned["code"])
        candidate = Offer(**{k: v for k, v in cleaned.items() if k in self.Meta.fields})
        try:
            offers.check_offer(offer=candidate)
        except offers.OfferError as exc:
            raise forms.ValidationError(str(exc)) from exc
        if self.instance.pk and self.instance.stripe_coupon_id:
            for name in ("kind", "percent_off", "amount_off", "currency", "duration"):
                if getattr(self.instance, name) != cleaned.get(name):
                    raise forms.ValidationError(
                        "Stripe coupons cannot change: end this offer and create a new one."
                    )
        return cleaned


@admin.register(Offer)
class OfferAdmin(admin.ModelAdmin):
    form = OfferAdminForm
    list_display = ["name", "code", "kind", "value", "ends_at", "redeemed", "active", "link"]
    list_filter = ["active", "kind"]
    search_fields = ["name", "code"]
    readonly_fields = ["stripe_coupon_id", "stripe_promotion_code_id", "created_at"]
    actions = ["end_offers"]

    @admin.display(description="Discount")
    def value(self, offer: Offer) -> str:
        if offer.kind == Offer.Kind.PERCENT:
            return f"{offer.percent_off}% off"
        if offer.kind == Offer.Kind.AMOUNT:
            return f"{format_amount(offer.amount_off or 0, offer.currency)} off"
        return f"{offer.trial_days} days free"

    @admin.display(description="Redemptions")
    def redeemed(self, offer: Offer) -> str:
        count = offers.redemptions(offer=offer)
        return f"{count} / {offer.max_redemptions}" if offer.max_redemptions else str(count)

    @admin.display(description="Link")
    def link(self, offer: Offer) -> str:
        return format_html("<code>/upgrade/?offer={}</code>", offer.code)

    def save_model(self, request: HttpRequest, obj: Offer, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        try:
            offers.publish_offer(offer=obj)
        except (stripe_client.StripeError, ImproperlyConfigured, offers.OfferError) as exc:
            self.message_user(
                request,
                f"Saved, but Stripe did not take the offer yet ({exc}); save it again to retry.",
                messages.ERROR,
            )

    @admin.action(description="End the selected offers")
    def end_offers(self, request: HttpRequest, queryset: QuerySet[Offer]) -> None:
        for offer in queryset:
            try:
                offers.end_offer(offer=offer)
            except stripe_client.StripeError as exc:
                self.message_user(request, f"{offer.code}: {exc}", messages.ERROR)
        self.message_user(request, "Ended.", messages.SUCCESS)


@admin.register(Gift)
class GiftAdmin(AddressSearchMixin, admin.ModelAdmin):
    list_display = [
        "created_at",
        "recipient_email",
        "buyer_email",
        "plan",
        "months",
        "amount_display",
        "deliver_on",
        "status",
    ]
    list_filter = ["status", "plan"]
    search_fields = ["recipient_email__contains", "buyer_email__contains"]
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request: HttpRequest, obj: Gift | None = None) -> Any:
        return [f.name for f in Gift._meta.fields]

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, gift: Gift) -> str:
        return format_amount(gift.amount, gift.currency)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # Gifts are bought on /gift/.


@admin.register(GroupInvite)
class GroupInviteAdmin(AddressSearchMixin, admin.ModelAdmin):
    list_display = ["email", "group", "invited_at", "accepted_at", "removed_at"]
    search_fields = ["email__contains"]
    readonly_fields = ["group", "email", "invited_at", "accepted_at", "removed_at", "seat"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # Buyers invite from /account/group/.


@admin.register(Donation)
class DonationAdmin(AddressSearchMixin, admin.ModelAdmin):
    list_display = ["created_at", "amount_display", "email", "recurring", "status", "thanked_at"]
    list_filter = ["status", "recurring", "currency"]
    search_fields = [
        "email__contains",
        "message",
        "stripe_checkout_session_id",
        "stripe_payment_intent_id",
    ]
    date_hierarchy = "created_at"
    autocomplete_fields = ["subscriber"]
    readonly_fields = [
        "amount",
        "amount_refunded",
        "currency",
        "email",
        "subscriber",
        "message",
        "recurring",
        "stripe_checkout_session_id",
        "stripe_payment_intent_id",
        "stripe_subscription_id",
        "stripe_invoice_id",
        "thanked_at",
        "created_at",
        "updated_at",
    ]

    @admin.display(description="Amount", ordering="amount")
    def amount_display(self, donation: Donation) -> str:
        return format_amount(donation.amount, donation.currency)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # Donations are recorded from Stripe.


class ProcessedFilter(admin.SimpleListFilter):
    title = "processing"
    parameter_name = "processing"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("processed", "Processed"), ("failed", "Failed"), ("waiting", "Waiting")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[StripeEvent]) -> QuerySet:
        if self.value() == "processed":
            return queryset.filter(processed_at__isnull=False)
        if self.value() == "failed":
            return queryset.filter(processed_at__isnull=True).exclude(error="")
        if self.value() == "waiting":
            return queryset.filter(processed_at__isnull=True, error="")
        return queryset


@admin.register(StripeEvent)
class StripeEventAdmin(admin.ModelAdmin):
    list_display = [
        "stripe_id",
        "type",
        "created",
        "received_at",
        "outcome",
        "attempts",
        "needs_attention",
    ]
    list_filter = ["needs_attention", ProcessedFilter, "type", "livemode"]
    search_fields = ["stripe_id", "type"]
    date_hierarchy = "received_at"
    actions = ["retry_now", "mark_handled"]
    readonly_fields = [
        "stripe_id",
        "type",
        "created",
        "livemode",
        "received_at",
        "processed_at",
        "attempts",
        "next_attempt_at",
        "error",
        "pretty_payload",
    ]
    exclude = ["payload"]

    @admin.display(description="Outcome")
    def outcome(self, event: StripeEvent) -> str:
        if event.processed_at:
            return "processed"
        if event.error:
            return format_html('<strong style="color:#b3261e">{}</strong>', "failed")
        return "waiting"

    @admin.display(description="Payload")
    def pretty_payload(self, event: StripeEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.payload, indent=2))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: StripeEvent | None = None) -> bool:
        return False if obj is not None else super().has_change_permission(request, obj)

    @admin.action(description="Retry processing now")
    def retry_now(self, request: HttpRequest, queryset: QuerySet[StripeEvent]) -> None:
        events = list(queryset.filter(processed_at__isnull=True))
        for event in events:
            stripe_events.schedule_retry_now(event=event)
            process_stripe_event.delay(event.pk)
        self.message_user(
            request,
            f"Queued {len(events)} event(s) for processing; processed ones were skipped.",
            messages.SUCCESS,
        )

    @admin.action(description="Mark as handled (clear the flag)")
    def mark_handled(self, request: HttpRequest, queryset: QuerySet[StripeEvent]) -> None:
        count = queryset.update(needs_attention=False)
        self.message_user(request, f"Cleared the flag on {count} event(s).", messages.SUCCESS)
