"""Comp and gift memberships, their expiry and reminders, and the editors' billing admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from subscriptions.models import Donation, Membership, Plan, StripeEvent
from subscriptions.services import access, memberships, revenue
from subscriptions.tasks import expire_memberships
from tests.factories import MembershipFactory, PlanFactory, SubscriberFactory

pytestmark = pytest.mark.django_db


def granted(kind="comp", days=30, **kwargs):
    return MembershipFactory(
        subscriber=kwargs.pop("subscriber", None) or SubscriberFactory(),
        kind=kind,
        plan=None,
        stripe_subscription_id=None,
        expires_at=timezone.now() + timedelta(days=days) if days is not None else None,
    )


def test_comp_and_gift_memberships_grant_access_until_they_expire():
    comp = granted("comp", days=3)
    gift = granted("gift", days=None)
    assert access.subscriber_is_paid(subscriber=comp.subscriber)
    assert access.subscriber_is_paid(subscriber=gift.subscriber)
    later = timezone.now() + timedelta(days=4)
    assert comp.subscriber not in access.paid_subscribers(now=later)
    assert gift.subscriber in access.paid_subscribers(now=later)


def test_the_periodic_task_expires_lapsed_memberships_and_reminds_a_week_before(
    django_capture_on_commit_callbacks, stripe_api
):
    PlanFactory()
    lapsed = granted("gift", days=30)
    Membership.objects.filter(pk=lapsed.pk).update(expires_at=timezone.now() - timedelta(hours=1))
    soon = granted("comp", days=5)
    later = granted("gift", days=20)
    endless = granted("comp", days=None)

    with django_capture_on_commit_callbacks(execute=True):
        result = expire_memberships.delay().get()

    assert result == {"expired": 1, "reminded": 1}
    lapsed.refresh_from_db()
    assert lapsed.status == Membership.Status.EXPIRED
    assert lapsed.canceled_at is not None
    assert not access.subscriber_is_paid(subscriber=lapsed.subscriber)
    assert [m.to for m in mail.outbox] == [[soon.subscriber.email]]
    assert "http://testserver/upgrade/" in mail.outbox[0].body
    soon.refresh_from_db()
    assert soon.reminder_sent_at is not None
    for untouched in (later, endless):
        untouched.refresh_from_db()
        assert untouched.reminder_sent_at is None
        assert untouched.status == Membership.Status.ACTIVE

    # Running again sends nothing new.
    with django_capture_on_commit_callbacks(execute=True):
        assert expire_memberships.delay().get() == {"expired": 0, "reminded": 0}
    assert len(mail.outbox) == 1


def test_a_reminder_the_mail_server_refuses_does_not_stop_the_others(
    settings, django_capture_on_commit_callbacks
):
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2
    due = [granted("comp", days=3), granted("gift", days=4)]

    with django_capture_on_commit_callbacks(execute=True):
        assert expire_memberships.delay().get() == {"expired": 0, "reminded": 2}

    for membership in due:
        membership.refresh_from_db()
        assert membership.reminder_sent_at is not None  # at most one reminder each


def test_no_reminder_goes_to_a_reader_who_has_subscribed_since(django_capture_on_commit_callbacks):
    comp = granted("comp", days=3)
    MembershipFactory(subscriber=comp.subscriber)  # a paid Stripe subscription
    with django_capture_on_commit_callbacks(execute=True):
        assert memberships.expire_memberships()["reminded"] == 0
    assert mail.outbox == []
    comp.refresh_from_db()
    assert comp.reminder_sent_at is not None


def test_no_reminder_goes_to_a_bounced_address(django_capture_on_commit_callbacks):
    bounced = SubscriberFactory(status="bounced")
    membership = granted("gift", days=2, subscriber=bounced)
    with django_capture_on_commit_callbacks(execute=True):
        assert memberships.expire_memberships()["reminded"] == 0
    assert mail.outbox == []
    membership.refresh_from_db()
    assert membership.reminder_sent_at is not None


def test_the_revenue_summary_counts_members_mrr_donations_and_churn():
    now = timezone.now()
    monthly = PlanFactory(amount=800, interval=Plan.Interval.MONTH)
    yearly = PlanFactory(amount=12000, interval=Plan.Interval.YEAR)
    MembershipFactory(plan=monthly)
    MembershipFactory(plan=yearly)
    MembershipFactory(plan=monthly, status=Membership.Status.TRIALING)  # not revenue yet
    gone = MembershipFactory(plan=monthly, status=Membership.Status.CANCELED, canceled_at=now)
    Membership.objects.filter(pk=gone.pk).update(created_at=now - timedelta(days=90))
    granted("comp", days=10)
    Donation.objects.create(amount=2500, status=Donation.Status.PAID)
    Donation.objects.create(amount=1000, status=Donation.Status.REFUNDED)
    Donation.objects.create(amount=700, status=Donation.Status.PENDING)

    summary = revenue.revenue_summary(now=now)

    assert summary.paid_members == 4  # two paying, one trialing, one comp
    assert summary.paying_members == 2
    assert summary.complimentary_members == 1
    assert summary.mrr == {"usd": 800 + 1000}
    assert summary.donations_this_month == {"usd": 2500}
    assert summary.donation_count_this_month == 1
    assert summary.churned_this_month == 1
    assert summary.churn_rate_this_month == 1.0  # the only member at the month's start left


def test_the_revenue_summary_of_an_earlier_day_bills_a_past_due_member_in_grace_that_day():
    now = timezone.now()
    monthly = PlanFactory(amount=800, interval=Plan.Interval.MONTH)
    MembershipFactory(plan=monthly)
    MembershipFactory(
        plan=monthly,
        status=Membership.Status.PAST_DUE,
        current_period_start=now - access.PAST_DUE_GRACE - timedelta(days=2),
    )
    three_days_ago = now - timedelta(days=3)  # six days into the unpaid period: in grace

    then = revenue.revenue_summary(now=three_days_ago)
    today = revenue.revenue_summary(now=now)

    assert (then.paying_members, then.mrr) == (2, {"usd": 1600})
    assert (today.paying_members, today.mrr) == (1, {"usd": 800})


def test_the_membership_admin_shows_the_revenue_summary(editor_client):
    paying = MembershipFactory(plan=PlanFactory(amount=800))
    ended = MembershipFactory(status=Membership.Status.CANCELED, canceled_at=timezone.now())
    page = editor_client.get("/admin/subscriptions/membership/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Monthly recurring revenue" in html
    assert "$8.00" in html
    for value, expected in (("yes", [paying]), ("no", [ended])):
        listed = editor_client.get(f"/admin/subscriptions/membership/?grants_access={value}")
        assert list(listed.context["cl"].result_list) == expected


def test_editors_can_filter_flagged_and_failed_events_and_retry_one(editor_client, stripe_api):
    customer = stripe_api.add_customer(email="retry@example.com")
    price = stripe_api.add_price(unit_amount=800)
    subscription = stripe_api.add_subscription(customer=customer["id"], price=price["id"])
    failed = StripeEvent.objects.create(
        stripe_id="evt_failed",
        type="customer.subscription.updated",
        created=timezone.now(),
        payload=stripe_api.event("customer.subscription.updated", subscription),
        attempts=10,
        error="StripeError: timed out",
    )
    StripeEvent.objects.create(
        stripe_id="evt_dispute",
        type="charge.dispute.created",
        created=timezone.now(),
        payload={},
        processed_at=timezone.now(),
        needs_attention=True,
    )

    failed_page = editor_client.get("/admin/subscriptions/stripeevent/?processing=failed")
    assert "evt_failed" in failed_page.content.decode()
    assert "evt_dispute" not in failed_page.content.decode()
    flagged = editor_client.get("/admin/subscriptions/stripeevent/?needs_attention__exact=1")
    assert "evt_dispute" in flagged.content.decode()
    detail = editor_client.get(f"/admin/subscriptions/stripeevent/{failed.pk}/change/")
    assert detail.status_code == 200
    assert "timed out" in detail.content.decode()

    response = editor_client.post(
        "/admin/subscriptions/stripeevent/",
        {"action": "retry_now", "_selected_action": [failed.pk]},
    )
    assert response.status_code == 302
    failed.refresh_from_db()
    assert failed.processed_at is not None
    assert failed.error == ""
    assert Membership.objects.get(stripe_subscription_id=subscription["id"]).status == "active"


def test_the_plan_admin_action_syncs_prices_with_stripe(editor_client, stripe_api):
    plan = PlanFactory(stripe_price_id=None, amount=900)
    response = editor_client.post(
        "/admin/subscriptions/plan/", {"action": "sync_with_stripe", "_selected_action": [plan.pk]}
    )
    assert response.status_code == 302
    plan.refresh_from_db()
    assert stripe_api.get("price", plan.stripe_price_id)["unit_amount"] == 900


def test_stripe_mirrored_fields_are_read_only_in_the_admin(editor_client):
    membership = MembershipFactory()
    page = editor_client.get(f"/admin/subscriptions/membership/{membership.pk}/change/")
    assert page.status_code == 200
    assert 'name="status"' not in page.content.decode()
    comp = granted("comp")
    page = editor_client.get(f"/admin/subscriptions/membership/{comp.pk}/change/")
    assert 'name="status"' in page.content.decode()
    assert 'name="expires_at_0"' in page.content.decode()


def test_an_editor_grants_a_gift_membership_in_the_admin(editor_client):
    subscriber = SubscriberFactory()
    add_page = editor_client.get("/admin/subscriptions/membership/add/").content.decode()
    assert '<option value="comp" selected>' in add_page
    assert '<option value="active" selected>' in add_page

    expires = timezone.now() + timedelta(days=60)
    response = editor_client.post(
        "/admin/subscriptions/membership/add/",
        {
            "subscriber": subscriber.pk,
            "kind": "gift",
            "status": "active",
            "expires_at_0": expires.strftime("%Y-%m-%d"),
            "expires_at_1": "12:00:00",
        },
    )
    assert response.status_code == 302
    assert access.subscriber_is_paid(subscriber=subscriber)

    refused = editor_client.post(
        "/admin/subscriptions/membership/add/",
        {"subscriber": subscriber.pk, "kind": "stripe", "status": "active"},
    )
    assert refused.status_code == 200
    assert "To grant one by hand, choose Complimentary or Gift." in refused.content.decode()
    assert Membership.objects.count() == 1


def test_without_a_plan_to_buy_the_reminder_offers_no_upgrade_link(
    django_capture_on_commit_callbacks,
):
    PlanFactory()  # priced, but Stripe is not configured: nothing can be bought
    soon = granted("comp", days=5)

    with django_capture_on_commit_callbacks(execute=True):
        expire_memberships.delay().get()

    [reminder] = mail.outbox
    assert reminder.to == [soon.subscriber.email]
    assert "/upgrade/" not in reminder.body
    assert "/upgrade/" not in str(reminder.alternatives[0][0])
