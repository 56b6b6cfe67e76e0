"""A paid membership from Checkout to cancellation, and what the reader can read meanwhile."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from newsletter.models import Article
from newsletter.services.access import can_read_full_article
from subscriptions.models import Membership, StripeEvent, Subscriber
from subscriptions.services import access
from tests.factories import PlanFactory, PublishedArticleFactory, UserFactory

pytestmark = pytest.mark.django_db

PAID_SENTENCE = "The sanctions regime is about to change."


@pytest.fixture
def paid_article():
    return PublishedArticleFactory(
        slug="the-long-war",
        visibility=Article.Visibility.PAID,
        body=f'<p>The free opening.</p><hr class="paywall"><p>{PAID_SENTENCE}</p>',
    )


@pytest.fixture
def plan(stripe_api):
    price = stripe_api.add_price(unit_amount=800, interval="month")
    return PlanFactory(name="Monthly", amount=800, stripe_price_id=price["id"])


def can_read(client, user, article) -> bool:
    via_service = can_read_full_article(user=user, article=article)
    page = client.get(f"/p/{article.slug}/")
    assert page.status_code == 200
    assert "The free opening." in page.content.decode()
    on_page = PAID_SENTENCE in page.content.decode()
    assert on_page == via_service, "the page and the access rule disagree"
    return on_page


def test_checkout_then_active_then_payment_failed_then_past_due_then_canceled(
    client, stripe_api, plan, paid_article, stripe_webhooks
):
    user = UserFactory(email="reader@example.com")
    client.force_login(user)
    assert not can_read(client, user, paid_article)

    # The reader chooses the plan and is sent to Stripe Checkout.
    response = client.post("/upgrade/", {"plan": plan.pk})
    assert response.status_code == 303
    session_id = response["Location"].rsplit("/", 1)[-1]
    subscriber = Subscriber.objects.get(user=user)

    # Coming back from Checkout grants nothing by itself.
    back = client.get(f"/upgrade/success/?session_id={session_id}")
    assert back.status_code == 200
    assert not can_read(client, user, paid_article)

    # The reader pays; Stripe sends its events (the subscription's first).
    session = stripe_api.complete_checkout(session_id)
    subscription = stripe_api.get("subscription", session["subscription"])
    for event in (
        stripe_api.event("customer.subscription.created", subscription),
        stripe_api.event("checkout.session.completed", session),
        stripe_api.event("invoice.paid", stripe_api.get("invoice", session["invoice"])),
    ):
        response = stripe_webhooks.send(event)
        assert response.status_code == 200

    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert membership.subscriber == subscriber
    assert membership.plan == plan
    assert membership.status == Membership.Status.ACTIVE
    assert membership.current_period_end > timezone.now()
    assert can_read(client, user, paid_article)

    # The renewal fails: past_due, an email with a link to fix the card, access kept.
    mail.outbox.clear()
    invoice = stripe_api.fail_invoice(subscription["id"])
    stripe_webhooks.deliver("invoice.payment_failed", invoice)
    membership.refresh_from_db()
    assert membership.status == Membership.Status.PAST_DUE
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["reader@example.com"]
    assert "http://testserver/account/billing/" in mail.outbox[0].body
    assert can_read(client, user, paid_article)

    # Past the grace period with the payment still failing, access ends, although
    # the unpaid period Stripe started runs on.
    Membership.objects.filter(pk=membership.pk).update(
        current_period_start=timezone.now() - access.PAST_DUE_GRACE - timedelta(hours=1)
    )
    membership.refresh_from_db()
    assert membership.current_period_end > timezone.now()
    assert not can_read(client, user, paid_article)

    # Stripe gives up and cancels the subscription.
    canceled = stripe_api.update_subscription(subscription["id"], status="canceled")
    stripe_webhooks.deliver("customer.subscription.deleted", canceled)
    membership.refresh_from_db()
    assert membership.status == Membership.Status.CANCELED
    assert membership.canceled_at is not None
    assert not can_read(client, user, paid_article)
    assert StripeEvent.objects.filter(processed_at__isnull=True).count() == 0


def test_a_new_reader_who_pays_is_confirmed_and_reads_after_signing_in(
    client, stripe_api, plan, paid_article, stripe_webhooks
):
    response = client.post("/upgrade/", {"plan": plan.pk, "email": "newcomer@example.com"})
    assert response.status_code == 303
    subscriber = Subscriber.objects.get(email="newcomer@example.com")
    assert subscriber.status == Subscriber.Status.PENDING
    assert mail.outbox == []  # no confirmation email: the payment confirms the address

    session_id = response["Location"].rsplit("/", 1)[-1]
    session = stripe_api.complete_checkout(session_id)
    stripe_webhooks.deliver("checkout.session.completed", session)

    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.ACTIVE
    assert access.subscriber_is_paid(subscriber=subscriber)
    user = UserFactory(email="newcomer@example.com")
    Subscriber.objects.filter(pk=subscriber.pk).update(user=user)
    client.force_login(user)
    assert can_read(client, user, paid_article)


def test_a_trial_counts_and_a_stale_past_due_does_not(stripe_api, plan):
    subscriber = Subscriber.objects.create(email="t@example.com", status="active")
    membership = Membership.objects.create(
        subscriber=subscriber,
        plan=plan,
        stripe_subscription_id="sub_trial",
        status=Membership.Status.TRIALING,
        current_period_end=timezone.now() + timedelta(days=14),
    )
    assert access.subscriber_is_paid(subscriber=subscriber)
    # A failed renewal: Stripe started the new (unpaid) period two days ago.
    membership.status = Membership.Status.PAST_DUE
    membership.current_period_start = timezone.now() - timedelta(days=2)
    membership.current_period_end = timezone.now() + timedelta(days=28)
    membership.save()
    assert access.subscriber_is_paid(subscriber=subscriber)  # inside the grace period
    membership.current_period_start = timezone.now() - access.PAST_DUE_GRACE - timedelta(days=1)
    membership.save()
    assert not access.subscriber_is_paid(subscriber=subscriber)
    for status in ("unpaid", "incomplete", "paused", "canceled"):
        membership.status = status
        membership.current_period_end = timezone.now() + timedelta(days=10)
        membership.save()
        assert not access.subscriber_is_paid(subscriber=subscriber), status


def test_a_reader_who_cancels_keeps_access_until_the_period_ends(
    client, stripe_api, plan, paid_article, stripe_webhooks
):
    user = UserFactory(email="leaving@example.com")
    subscriber = Subscriber.objects.create(email=user.email, status="active", user=user)
    customer = stripe_api.add_customer(email=user.email)
    Subscriber.objects.filter(pk=subscriber.pk).update(stripe_customer_id=customer["id"])
    subscription = stripe_api.add_subscription(customer=customer["id"], price=plan.stripe_price_id)
    stripe_webhooks.deliver("customer.subscription.created", subscription)
    updated = stripe_api.update_subscription(
        subscription["id"], cancel_at_period_end=True, current_period_end=int(time.time()) + 3600
    )
    stripe_webhooks.deliver("customer.subscription.updated", updated)
    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert membership.cancel_at_period_end is True
    client.force_login(user)
    assert can_read(client, user, paid_article)


@pytest.mark.django_db(transaction=True)
def test_paying_on_the_stand_in_checkout_page_delivers_signed_webhooks_over_http(
    live_server, stripe_api, settings
):
    """The whole flow over real HTTP, as the browser journeys drive it."""
    import urllib.request

    price = stripe_api.add_price(unit_amount=800)
    plan = PlanFactory(stripe_price_id=price["id"])
    stripe_api.webhook_url = f"{live_server.url}/stripe/webhook/"
    stripe_api.webhook_secret = settings.STRIPE_WEBHOOK_SECRET
    settings.SITE_URL = live_server.url

    client = Client()
    response = client.post("/upgrade/", {"plan": plan.pk, "email": "http@example.com"})
    checkout_url = response["Location"]
    assert checkout_url.startswith(f"{stripe_api.url}/pay/")

    page = urllib.request.urlopen(checkout_url, timeout=10).read().decode()
    assert "Pay 8.00 USD" in page
    paid = urllib.request.urlopen(
        urllib.request.Request(checkout_url, data=b"email=http%40example.com", method="POST"),
        timeout=30,
    )
    assert paid.url.startswith(f"{live_server.url}/upgrade/success/?session_id=cs_")

    assert [e["type"] for e in stripe_api.delivered_events] == [
        "checkout.session.completed",
        "customer.subscription.created",
        "invoice.paid",
    ]
    from subscriptions.services import stripe_outbox

    stripe_outbox.drain()  # the workers' next poll
    assert StripeEvent.objects.filter(processed_at__isnull=False).count() == 3
    subscriber = Subscriber.objects.get(email="http@example.com")
    assert access.subscriber_is_paid(subscriber=subscriber)


def test_a_payment_failure_that_arrives_after_the_retry_succeeded_sends_no_email(
    stripe_api, plan, stripe_webhooks
):
    user = UserFactory(email="recovered@example.com")
    subscriber = Subscriber.objects.create(email=user.email, status="active", user=user)
    customer = stripe_api.add_customer(email=user.email)
    Subscriber.objects.filter(pk=subscriber.pk).update(stripe_customer_id=customer["id"])
    subscription = stripe_api.add_subscription(customer=customer["id"], price=plan.stripe_price_id)
    failed = stripe_api.fail_invoice(subscription["id"])
    paid = stripe_api.renew_subscription(subscription["id"])  # Stripe's retry went through

    for event in (
        stripe_api.event("invoice.paid", paid),
        stripe_api.event("invoice.payment_failed", failed),  # delivered late
    ):
        stripe_webhooks.send(event)

    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert membership.status == Membership.Status.ACTIVE
    assert mail.outbox == []
