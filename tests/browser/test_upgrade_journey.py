"""Journey 2: a reader signs in with an emailed code, upgrades through Checkout, reads on."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from newsletter.models import Article
from publication.models import Publication
from subscriptions.models import Membership, StripeEvent, Subscriber
from subscriptions.services.access import subscriber_is_paid
from tests.browser.conftest import Site, save_screenshot
from tests.browser.harness import message_text, wait_until
from tests.browser.journeys import pay_on_checkout
from tests.factories import PlanFactory, SubscriberFactory

pytestmark = pytest.mark.browser

FREE_PART = "Shipping through the strait fell by a third in a month."
PAID_PART = "The ministries are quietly rerouting the convoys."


def sign_in_with_emailed_code(site: Site, page: Page, email: str) -> None:
    page.goto(site.link("/accounts/login/"))
    page.get_by_label("Email address").fill(email)
    page.get_by_role("button", name="Email me a sign-in code").click()
    message = site.mail.wait_for(to=email, subject_contains="Sign-In Code")
    code = re.search(
        r"^\s*([A-Z0-9][A-Z0-9-]{4,14}[A-Z0-9])\s*$", message_text(message), re.MULTILINE
    )
    assert code, message_text(message)
    page.get_by_label("Code").fill(code.group(1))
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("link", name="Account", exact=True)).to_be_visible()


def test_reader_signs_in_with_a_code_upgrades_and_then_reads_the_paid_part(
    site: Site, page: Page
) -> None:
    Publication.objects.update_or_create(pk=1, defaults={"name": "The Meridian"})
    price = site.stripe.add_price(unit_amount=800, interval="month")
    PlanFactory(name="Monthly", amount=800, stripe_price_id=price["id"])
    subscriber = SubscriberFactory(email="ada@example.org")
    Article.objects.create(
        title="Convoys and chokepoints",
        slug="convoys-and-chokepoints",
        body=f'<p>{FREE_PART}</p><hr class="paywall"><p>{PAID_PART}</p>',
        visibility=Article.Visibility.PAID,
        status=Article.Status.PUBLISHED,
        published_at=timezone.now(),
    )

    sign_in_with_emailed_code(site, page, "ada@example.org")

    page.goto(site.link("/p/convoys-and-chokepoints/"))
    expect(page.get_by_text(FREE_PART)).to_be_visible()
    expect(page.get_by_text(PAID_PART)).to_have_count(0)

    page.goto(site.link("/upgrade/"))
    page.get_by_role("button", name="Continue to payment").click()
    pay_on_checkout(page, site, amount="8.00 USD")

    page.wait_for_url(f"{site.url}/upgrade/success/**")
    expect(page.get_by_role("heading", name="Thank you for subscribing")).to_be_visible()
    delivered = [event["type"] for event in site.stripe.delivered_events[-3:]]
    assert delivered[:2] == ["checkout.session.completed", "customer.subscription.created"]

    # Access comes from the webhooks, processed by the worker, never from the redirect.
    wait_until(
        lambda: subscriber_is_paid(subscriber=subscriber),
        timeout=20,
        what="the webhook to grant a paid membership",
    )
    membership = Membership.objects.get(subscriber=subscriber)
    assert membership.status == Membership.Status.ACTIVE
    assert membership.stripe_subscription_id.startswith("sub_")
    for event_type in ("checkout.session.completed", "customer.subscription.created"):
        event = StripeEvent.objects.get(type=event_type)
        wait_until(
            lambda event=event: StripeEvent.objects.get(pk=event.pk).processed_at,
            timeout=20,
            what=f"{event_type} to be processed",
        )
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.ACTIVE
    assert subscriber.stripe_customer_id

    page.goto(site.link("/p/convoys-and-chokepoints/"))
    expect(page.get_by_text(FREE_PART)).to_be_visible()
    expect(page.get_by_text(PAID_PART)).to_be_visible()
    save_screenshot(page, "journey-2-paid-article")
