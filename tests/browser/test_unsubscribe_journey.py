"""Journey 5: a reader unsubscribes from the link in an email; the next one skips them."""

from __future__ import annotations

import re
import urllib.request

import pytest
from playwright.sync_api import Page, expect

from newsletter.models import EmailSend
from publication.models import Publication
from subscriptions.models import Subscriber
from tests.browser.conftest import Site, save_screenshot
from tests.browser.harness import manage, message_html, wait_until
from tests.factories import ArticleFactory, SubscriberFactory

pytestmark = pytest.mark.browser


def publish(site: Site, slug: str) -> EmailSend:
    """Publish as an editor would from the shell, in a process of the running stack."""
    manage(site.stack.env, "publish_article", slug)
    send = EmailSend.objects.get(article__slug=slug)
    wait_until(
        lambda: EmailSend.objects.get(pk=send.pk).status == EmailSend.Status.SENT,
        timeout=30,
        what=f"the send of {slug} to finish",
    )
    return send


def test_reader_unsubscribes_from_the_email_and_does_not_get_the_next_article(
    site: Site, page: Page
) -> None:
    Publication.objects.update_or_create(pk=1, defaults={"name": "The Meridian"})
    leaving = SubscriberFactory(email="ada@example.org")
    SubscriberFactory(email="bob@example.org")
    one_click = SubscriberFactory(email="cy@example.org")
    ArticleFactory(title="Straits under pressure", slug="straits-under-pressure")
    ArticleFactory(title="The convoy question", slug="the-convoy-question")

    publish(site, "straits-under-pressure")
    email = site.mail.wait_for(to="ada@example.org", subject_contains="Straits under pressure")

    # Another reader uses the mail client's own button: RFC 8058 one-click, a bare POST
    # with no cookies and no CSRF token, to the https-or-http URL in List-Unsubscribe.
    to_cy = site.mail.wait_for(to="cy@example.org", subject_contains="Straits under pressure")
    one_click_url = re.search(r"<(http[^>]+)>", str(to_cy["List-Unsubscribe"]))
    assert one_click_url
    request = urllib.request.Request(
        one_click_url.group(1), data=b"List-Unsubscribe=One-Click", method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    one_click.refresh_from_db()
    assert one_click.status == Subscriber.Status.UNSUBSCRIBED

    # Open the email as the reader's mail client would show it, and click the link.
    page.set_content(message_html(email))
    page.get_by_role("link", name="Unsubscribe").last.click()
    page.wait_for_url(f"{site.url}/unsubscribe/**")
    expect(page.get_by_role("heading", name="Unsubscribe?")).to_be_visible()
    leaving.refresh_from_db()
    assert leaving.status == Subscriber.Status.ACTIVE  # opening the link changes nothing

    page.get_by_role("button", name="Unsubscribe").click()
    expect(page.get_by_role("heading", name="You're unsubscribed")).to_be_visible()
    leaving.refresh_from_db()
    assert leaving.status == Subscriber.Status.UNSUBSCRIBED
    save_screenshot(page, "journey-5-unsubscribed")

    send = publish(site, "the-convoy-question")
    site.mail.wait_for(to="bob@example.org", subject_contains="The convoy question")
    for reader in (leaving, one_click):
        assert not send.deliveries.filter(subscriber=reader).exclude(status="skipped").exists()
    to_ada = [str(message["Subject"]) for message in site.mail.to("ada@example.org")]
    assert to_ada == [str(email["Subject"])]
    assert len(site.mail.to("cy@example.org")) == 1
