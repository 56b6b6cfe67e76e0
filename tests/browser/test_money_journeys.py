"""Journeys for what publications sell besides plans: a gift, an offer, a trial, a group.

Each runs the whole product (gunicorn, a worker, Stripe's stand-in delivering signed
webhooks) in a real Chromium; access always comes from the webhooks.
"""

from __future__ import annotations

import pytest
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from newsletter.models import Article
from publication.models import Publication
from subscriptions.models import Gift, Membership, Offer, Plan, StripeEvent, Subscriber
from subscriptions.services import offers
from subscriptions.services.access import subscriber_is_paid
from tests.browser import harness
from tests.browser.conftest import Site, save_screenshot
from tests.browser.harness import message_text, wait_until
from tests.browser.journeys import link_in, pay_on_checkout
from tests.browser.test_upgrade_journey import sign_in_with_emailed_code
from tests.factories import PlanFactory

pytestmark = pytest.mark.browser

FREE_PART = "The straits carry a fifth of the world's oil."
PAID_PART = "Three navies now escort the tankers in turn."


@pytest.fixture
def paid_article(site: Site) -> Article:
    Publication.objects.update_or_create(pk=1, defaults={"name": "The Meridian"})
    return Article.objects.create(
        title="Escorts in the strait",
        slug="escorts-in-the-strait",
        body=f'<p>{FREE_PART}</p><hr class="paywall"><p>{PAID_PART}</p>',
        visibility=Article.Visibility.PAID,
        status=Article.Status.PUBLISHED,
        published_at=timezone.now(),
    )


def monthly_plan(site: Site, **fields) -> Plan:
    price = site.stripe.add_price(unit_amount=fields.pop("amount", 800), interval="month")
    return PlanFactory(
        name=fields.pop("name", "Monthly"),
        amount=price["unit_amount"],
        stripe_price_id=price["id"],
        **fields,
    )


def reads_paid_part(page: Page, site: Site) -> None:
    page.goto(site.link("/p/escorts-in-the-strait/"))
    expect(page.get_by_text(FREE_PART)).to_be_visible()
    expect(page.get_by_text(PAID_PART)).to_be_visible()


def settle() -> None:
    """Wait for the worker to finish every delivered event, so nothing runs on into the
    next journey's database reset."""
    wait_until(
        lambda: not StripeEvent.objects.filter(processed_at__isnull=True).exists(),
        timeout=20,
        what="every Stripe event to be processed",
    )


def paid(email: str) -> bool:
    subscriber = Subscriber.objects.filter(email=email).first()
    return subscriber is not None and subscriber_is_paid(subscriber=subscriber)


def test_a_reader_is_given_a_gift_and_redeems_it(site: Site, page: Page, paid_article) -> None:
    plan = monthly_plan(site)
    page.goto(site.link("/gift/"))
    expect(page.get_by_role("heading", name="Give The Meridian")).to_be_visible()
    page.locator(f"input[name=option][value='{plan.pk}-3']").check()
    page.get_by_label("Their email address").fill("ada@example.org")
    page.get_by_label("Their name (optional)").fill("Ada")
    page.get_by_label("A message for them (optional)").fill("For the long winter.")
    page.get_by_label("Your email address, for the receipt").fill("grace@example.org")
    page.get_by_label("Your name, as they will see it (optional)").fill("Grace")
    page.get_by_role("button", name="Continue to payment").click()
    pay_on_checkout(page, site, amount="24.00 USD")
    page.wait_for_url(f"{site.url}/gift/thanks/**")
    expect(page.get_by_role("heading", name="Thank you for your gift")).to_be_visible()

    receipt = site.mail.wait_for(to="grace@example.org", subject_contains="gift subscription")
    assert "$24.00" in message_text(receipt)
    delivery = site.mail.wait_for(to="ada@example.org", subject_contains="gave you")
    text = message_text(delivery)
    assert "For the long winter." in text
    link = link_in(text, site, "/gift/redeem/")

    page.context.clear_cookies()
    page.goto(link)
    expect(page.get_by_role("heading", name="A gift subscription for you")).to_be_visible()
    assert not paid("ada@example.org")
    page.get_by_role("button", name="Redeem my gift").click()
    page.wait_for_url(f"{site.url}/account/**")
    assert paid("ada@example.org")
    reads_paid_part(page, site)
    site.mail.wait_for(to="grace@example.org", subject_contains="redeemed your gift")

    # The link works once.
    page.goto(link)
    page.get_by_role("button", name="Redeem my gift").click()
    expect(page.get_by_text("This gift has already been redeemed.")).to_be_visible()
    assert Gift.objects.get().status == Gift.Status.REDEEMED
    save_screenshot(page, "journey-gift-redeemed-twice")
    settle()


def test_a_reader_uses_an_offer_link(site: Site, page: Page, paid_article, settings) -> None:
    monthly_plan(site, amount=1000)
    settings.STRIPE_SECRET_KEY = harness.STRIPE_SECRET_KEY
    settings.STRIPE_API_BASE = site.stripe.url
    offer = offers.publish_offer(
        offer=Offer.objects.create(
            code="WINTER",
            name="Winter offer",
            kind=Offer.Kind.PERCENT,
            percent_off=25,
            duration=Offer.Duration.FOREVER,
        )
    )
    page.goto(site.link("/upgrade/?offer=winter"))
    expect(page.get_by_text("Winter offer: $7.50 instead of $10.00")).to_be_visible()
    page.get_by_label("Email address").fill("offer@example.org")
    page.get_by_role("button", name="Continue to payment").click()
    pay_on_checkout(page, site, amount="7.50 USD")
    page.wait_for_url(f"{site.url}/upgrade/success/**")
    wait_until(lambda: paid("offer@example.org"), timeout=20, what="the offer's membership")
    membership = Membership.objects.get(subscriber__email="offer@example.org")
    assert membership.offer == offer
    wait_until(
        lambda: Membership.objects.get(pk=membership.pk).discount_percent_off == 25,
        timeout=20,
        what="the discount to be mirrored",
    )

    # Once ended, the link says so.
    offers.end_offer(offer=offer)
    page.goto(site.link("/upgrade/?offer=WINTER"))
    expect(page.get_by_text("The offer “Winter offer” has ended.")).to_be_visible()
    settle()


def test_a_reader_starts_a_free_trial_and_is_reminded(site: Site, page: Page, paid_article) -> None:
    plan = monthly_plan(site, trial_days=7)
    Subscriber.objects.create(email="trial@example.org", status=Subscriber.Status.ACTIVE)
    sign_in_with_emailed_code(site, page, "trial@example.org")
    page.goto(site.link("/upgrade/"))
    expect(page.get_by_text("7-day free trial")).to_be_visible()
    page.get_by_role("button", name="Continue to payment").click()
    pay_on_checkout(page, site, amount="0.00 USD")
    page.wait_for_url(f"{site.url}/upgrade/success/**")
    wait_until(lambda: paid("trial@example.org"), timeout=20, what="the trial to grant access")
    membership = Membership.objects.get(subscriber__email="trial@example.org")
    assert membership.status == Membership.Status.TRIALING
    assert membership.plan == plan
    reads_paid_part(page, site)

    subscription = site.stripe.subscription(membership.stripe_subscription_id)
    site.stripe.deliver(site.stripe.event("customer.subscription.trial_will_end", subscription))
    reminder = site.mail.wait_for(to="trial@example.org", subject_contains="free trial ends")
    assert "$8.00" in message_text(reminder)
    settle()


def test_a_buyer_invites_a_reader_who_joins_the_group(
    site: Site, page: Page, browser: Browser, paid_article
) -> None:
    plan = monthly_plan(site, name="Newsroom", amount=600, kind=Plan.Kind.GROUP)
    Subscriber.objects.create(email="desk@ministry.example", status=Subscriber.Status.ACTIVE)
    sign_in_with_emailed_code(site, page, "desk@ministry.example")
    page.goto(site.link("/upgrade/"))
    page.locator(f"input[name=plan][value='{plan.pk}']").check()
    page.get_by_label("Seats, for a group plan").fill("3")
    page.get_by_role("button", name="Continue to payment").click()
    pay_on_checkout(page, site, amount="18.00 USD")
    page.wait_for_url(f"{site.url}/upgrade/success/**")
    wait_until(
        lambda: Membership.objects.filter(
            subscriber__email="desk@ministry.example", quantity=3, status="active"
        ).exists(),
        timeout=20,
        what="the group's subscription",
    )

    page.goto(site.link("/account/group/"))
    expect(page.get_by_text("3 seats, 3 free")).to_be_visible()
    page.get_by_label("Invite a reader by email").fill("analyst@uni.example")
    page.get_by_role("button", name="Send invitation").click()
    expect(page.get_by_text("Invitation sent to analyst@uni.example.")).to_be_visible()
    invite = site.mail.wait_for(to="analyst@uni.example", subject_contains="group subscription")
    link = link_in(message_text(invite), site, "/account/group/join/")

    reader = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        reader_page = reader.new_page()
        reader_page.goto(link)
        reader_page.get_by_role("button", name="Join the group").click()
        reader_page.wait_for_url(f"{site.url}/account/**")
        assert paid("analyst@uni.example")
        reads_paid_part(reader_page, site)
    finally:
        reader.close()
    page.goto(site.link("/account/group/"))
    row = page.get_by_role("row").filter(has_text="analyst@uni.example")
    expect(row.get_by_role("cell", name="analyst@uni.example", exact=True)).to_be_visible()
    expect(row.get_by_text("Joined")).to_be_visible()
    save_screenshot(page, "journey-group-members")
    settle()
