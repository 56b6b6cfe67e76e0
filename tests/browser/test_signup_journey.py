"""Journey 1: a visitor subscribes from the home page and confirms by the emailed link."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from publication.models import Publication
from subscriptions.models import Subscriber
from tests.browser.conftest import Site, save_screenshot
from tests.browser.harness import message_html, message_text
from tests.browser.journeys import link_in
from tests.factories import PublishedArticleFactory

pytestmark = pytest.mark.browser


def test_visitor_subscribes_from_the_home_page_and_lands_on_the_welcome_page(
    site: Site, page: Page
) -> None:
    Publication.objects.update_or_create(
        pk=1, defaults={"name": "The Meridian", "tagline": "Geopolitics, weekly"}
    )
    PublishedArticleFactory(title="Straits under pressure", slug="straits-under-pressure")

    page.goto(site.link("/"))
    expect(page.get_by_role("link", name="Straits under pressure")).to_be_visible()
    form = page.locator("form.subscribe-form").first
    form.get_by_label("Get new articles by email").fill("ada@example.org")
    form.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()

    subscriber = Subscriber.objects.get(email="ada@example.org")
    assert subscriber.status == Subscriber.Status.PENDING
    assert subscriber.consent_at is not None

    confirmation = site.mail.wait_for(to="ada@example.org", subject_contains="Confirm")
    confirm_url = link_in(message_text(confirmation), site, "/subscribe/confirm/")
    assert confirm_url in message_html(confirmation)
    assert len(site.mail.to("ada@example.org")) == 1

    page.goto(confirm_url)
    expect(page.get_by_role("heading", name="You're subscribed")).to_be_visible()
    expect(page.get_by_text("ada@example.org")).to_be_visible()
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.ACTIVE
    assert subscriber.confirmed_at is not None

    welcome = site.mail.wait_for(to="ada@example.org", subject_contains="Welcome")
    assert link_in(message_text(welcome), site, "/unsubscribe/")
    save_screenshot(page, "journey-1-welcome")
