"""Journey 3: a visitor donates a custom amount; the webhook records it; thanks arrive."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from publication.models import Publication
from subscriptions.models import Donation, StripeEvent
from tests.browser.conftest import Site, save_screenshot
from tests.browser.harness import message_text, wait_until
from tests.browser.journeys import pay_on_checkout

pytestmark = pytest.mark.browser


def test_visitor_donates_a_custom_amount_and_gets_a_thank_you_email(site: Site, page: Page) -> None:
    Publication.objects.update_or_create(pk=1, defaults={"name": "The Meridian"})

    page.goto(site.link("/"))
    page.get_by_role("link", name="Donate").first.click()
    expect(page.get_by_role("heading", name="Support The Meridian")).to_be_visible()
    page.get_by_label("Once").check()
    # "Other amount" is one field (no radio button for it): a typed amount wins.
    page.get_by_label("Other amount", exact=True).fill("12.50")
    page.get_by_label("Email for your receipt (optional)").fill("grace@example.org")
    page.get_by_label("A message to the author (optional)").fill("For the reporting trips.")
    page.get_by_role("button", name="Continue to payment").click()

    pay_on_checkout(page, site, amount="12.50 USD")
    page.wait_for_url(f"{site.url}/donate/thanks/**")
    expect(page.get_by_role("heading", name="Thank you")).to_be_visible()

    # Recorded from the signed webhook by the worker, not from the redirect.
    donation = wait_until(
        lambda: Donation.objects.filter(status=Donation.Status.PAID).first(),
        timeout=20,
        what="the webhook to record the donation",
    )
    assert isinstance(donation, Donation)
    assert donation.amount == 1250
    assert donation.currency == "usd"
    assert donation.email == "grace@example.org"
    assert donation.message == "For the reporting trips."
    assert not donation.recurring
    assert donation.stripe_payment_intent_id.startswith("pi_")
    assert Donation.objects.count() == 1
    event = StripeEvent.objects.get(type="checkout.session.completed")
    assert event.processed_at is not None

    thanks = site.mail.wait_for(to="grace@example.org", subject_contains="Thank you")
    text = message_text(thanks)
    assert "$12.50" in text
    assert "For the reporting trips." in text
    assert len(site.mail.to("grace@example.org")) == 1
    save_screenshot(page, "journey-3-donation-thanks")
