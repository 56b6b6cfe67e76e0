"""The article editor keeps the paywall marker when an article is opened and saved again.

The marker is a node of our own editor extension (newsletter/static/newsletter/prose/
paywall.js); the editor's plain horizontal rule would drop its class on load, and the
next save would quietly give the paid part away.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from newsletter.models import Article
from newsletter.services.content import PAYWALL_MARKER, split_at_paywall
from tests.browser.conftest import Site
from tests.factories import ArticleFactory, StaffUserFactory

pytestmark = pytest.mark.browser

FREE = "Insurers priced the risk before any navy moved."
PAID = "Our scenario: premiums double again by spring."


def test_reopening_and_saving_an_article_keeps_its_one_paywall(site: Site, page: Page) -> None:
    editor = StaffUserFactory(username="marta")
    editor.set_password("a-long-editor-passphrase")
    editor.save()
    article = ArticleFactory(
        visibility=Article.Visibility.PAID,
        body=f"<p>{FREE}</p>{PAYWALL_MARKER}<hr><p>{PAID}</p>",
    )

    page.goto(site.link(f"/admin/newsletter/article/{article.pk}/change/"))
    page.get_by_label("Username").fill("marta")
    page.get_by_label("Password").fill("a-long-editor-passphrase")
    page.get_by_role("button", name="Log in").click()

    editor_area = page.locator(".ProseMirror[contenteditable=true]")
    expect(editor_area.locator(".paywall-marker")).to_have_count(1)
    expect(editor_area.locator("hr")).to_have_count(1)  # the plain rule stays a rule
    # The editor's menu marks unavailable buttons with a class, not the attribute.
    expect(page.get_by_title("Insert the paywall here")).to_have_class(re.compile(r"\bdisabled\b"))

    page.get_by_role("button", name="Save and continue editing").first.click()
    expect(page.locator(".messagelist .success").first).to_be_visible()
    article.refresh_from_db()
    assert article.body.count(PAYWALL_MARKER) == 1
    free, paid = split_at_paywall(html=article.body)
    assert FREE in free and PAID not in free
    assert PAID in paid
    assert "<hr>" in paid
