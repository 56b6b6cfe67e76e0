"""Journey 4: an editor writes and publishes a paid article from the admin.

The email reaches free readers up to the paywall and paid readers in full, nobody
else, and the Telegram channel gets one teaser post.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from newsletter.models import Article, Delivery, EmailSend
from publication.models import Publication
from subscriptions.models import Subscriber
from tests.browser.conftest import Site, save_screenshot
from tests.browser.harness import TELEGRAM_CHAT_ID, message_html, message_text, wait_until
from tests.factories import MembershipFactory, StaffUserFactory, SubscriberFactory

pytestmark = pytest.mark.browser

FREE_PART = "Shipping through the strait fell by a third in a month."
PAID_PART = "The ministries are quietly rerouting the convoys."


def sign_in_to_the_admin(site: Site, page: Page, *, username: str, password: str) -> None:
    page.goto(site.link("/admin/"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("link", name="Articles")).to_be_visible()


def test_editor_publishes_a_paid_article_that_reaches_each_reader_in_the_right_version(
    site: Site, page: Page
) -> None:
    Publication.objects.update_or_create(pk=1, defaults={"name": "The Meridian"})
    editor = StaffUserFactory(username="ines")
    editor.set_password("a-long-editor-passphrase")
    editor.save()
    free_reader = SubscriberFactory(email="free@example.org")
    paid_reader = MembershipFactory(subscriber__email="paid@example.org").subscriber
    SubscriberFactory(email="pending@example.org", status=Subscriber.Status.PENDING)
    SubscriberFactory(email="gone@example.org", status=Subscriber.Status.UNSUBSCRIBED)

    sign_in_to_the_admin(site, page, username="ines", password="a-long-editor-passphrase")
    page.get_by_role("link", name="Articles").click()
    page.get_by_role("link", name="Add article").click()
    page.get_by_label("Title:", exact=True).fill("Convoys and chokepoints")
    page.get_by_label("Subtitle:").fill("Who gains from the detour")
    expect(page.get_by_label("Slug:", exact=True)).to_have_value("convoys-and-chokepoints")

    # The rich-text editor: write both parts, then put the paywall after the first.
    editor_area = page.locator(".prose-editor [contenteditable=true]")
    editor_area.click()
    page.keyboard.type(FREE_PART)
    page.keyboard.press("Enter")
    page.keyboard.type(PAID_PART)
    editor_area.get_by_text(FREE_PART).click()
    page.keyboard.press("End")
    page.get_by_title("Insert the paywall here").click()
    expect(editor_area.locator(".paywall-marker")).to_have_count(1)
    expect(page.get_by_title("Insert the paywall here")).to_have_class(re.compile("disabled"))
    page.get_by_label("Visibility:").select_option(label="Paid subscribers")
    page.get_by_role("button", name="Save and continue editing").first.click()
    expect(page.locator(".messagelist .success").first).to_be_visible()

    article = Article.objects.get(slug="convoys-and-chokepoints")
    assert article.status == Article.Status.DRAFT
    assert article.body.index(FREE_PART) < article.body.index('<hr class="paywall">')
    assert article.body.index('<hr class="paywall">') < article.body.index(PAID_PART)

    page.get_by_role("button", name="Publish now…").first.click()
    expect(page.get_by_text("Email 2 readers: 1 paid, 1 free; post to Telegram")).to_be_visible()
    page.get_by_role("button", name="Yes, publish now").click()
    expect(page.locator(".messagelist").get_by_text("Published.")).to_be_visible()
    article.refresh_from_db()
    assert article.status == Article.Status.PUBLISHED

    # The worker sends both versions, over SMTP, to the captured inbox.
    free_email = site.mail.wait_for(to="free@example.org", subject_contains="Convoys")
    paid_email = site.mail.wait_for(to="paid@example.org", subject_contains="Convoys")
    assert FREE_PART in message_text(free_email)
    assert PAID_PART not in message_text(free_email)
    assert PAID_PART not in message_html(free_email)
    assert f"{site.url}/upgrade/" in message_text(free_email)
    assert FREE_PART in message_text(paid_email)
    assert PAID_PART in message_text(paid_email)
    assert PAID_PART in message_html(paid_email)
    for email in (free_email, paid_email):
        assert email["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert f"<{site.url}/unsubscribe/" in email["List-Unsubscribe"]

    send = EmailSend.objects.get(article=article)
    wait_until(
        lambda: EmailSend.objects.get(pk=send.pk).status == EmailSend.Status.SENT,
        timeout=20,
        what="the send to finish",
    )
    delivered = set(
        Delivery.objects.filter(send=send, status=Delivery.Status.SENT).values_list(
            "subscriber_id", flat=True
        )
    )
    assert delivered == {free_reader.pk, paid_reader.pk}
    for address in ("pending@example.org", "gone@example.org"):
        assert site.mail.to(address) == []
    assert len(site.mail.to("free@example.org")) == 1
    assert len(site.mail.to("paid@example.org")) == 1

    posts = wait_until(
        lambda: site.telegram.posts(TELEGRAM_CHAT_ID),
        timeout=20,
        what="the Telegram post",
    )
    assert isinstance(posts, list)
    assert len(posts) == 1
    assert "Convoys and chokepoints" in posts[0].text
    assert PAID_PART not in posts[0].text
    assert any(
        entity.url == f"{site.url}/p/convoys-and-chokepoints/" for entity in posts[0].entities
    )

    page.get_by_role("link", name="View it on the site").click()
    expect(page.get_by_text(PAID_PART)).to_be_visible()

    # A visitor, signed out, sees the free part and the paywall, never the paid part.
    assert page.context.browser is not None
    visitor = page.context.browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        visitor_page = visitor.new_page()
        visitor_page.goto(site.link("/p/convoys-and-chokepoints/"))
        expect(visitor_page.get_by_text(FREE_PART)).to_be_visible()
        expect(
            visitor_page.get_by_role("heading", name="This article is for paid subscribers")
        ).to_be_visible()
        assert PAID_PART not in visitor_page.content()
        save_screenshot(visitor_page, "journey-4-published-article-as-visitor")
    finally:
        visitor.close()
