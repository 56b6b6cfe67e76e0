"""The admin home on a 390 px phone: wide tables scroll inside their panel, the page
itself never scrolls sideways."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page

from newsletter.models import EmailSend
from tests.browser.conftest import Site
from tests.browser.test_editor_journey import sign_in_to_the_admin
from tests.factories import ArticleFactory, PublishedArticleFactory, StaffUserFactory

pytestmark = pytest.mark.browser

# What reaches past the right edge, outside the boxes that scroll on their own.
OUTSIDE_THE_SCREEN = """() => [...document.querySelectorAll("body *")]
  .filter((e) => e.getBoundingClientRect().right > 391 && !e.closest(".editors-home__scroll"))
  .slice(0, 8)
  .map((e) => `${e.tagName} in .${(e.closest("section, div") || {}).className}`)"""


def test_the_admin_home_does_not_scroll_sideways_at_390_px(site: Site, page: Page) -> None:
    editor = StaffUserFactory(username="noor")
    editor.set_password("a-long-editor-passphrase")
    editor.save()
    for number in range(3):
        article = PublishedArticleFactory(title=f"The harbour authority's report, part {number}")
        EmailSend.objects.create(
            article=article, audience="everyone", status="sent", recipient_count=12_345,
            sent_count=12_300, failed_count=45,
        )  # fmt: skip
    ArticleFactory(title="A draft about the harbour")

    sign_in_to_the_admin(site, page, username="noor", password="a-long-editor-passphrase")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(site.link("/admin/"))
    table = page.locator("section[aria-labelledby=home-last-articles] table")
    table.wait_for()

    width = page.evaluate("() => document.documentElement.scrollWidth")
    sticking_out = page.evaluate(OUTSIDE_THE_SCREEN)
    assert width <= 390, (width, sticking_out)
    # The table is whole, reachable by scrolling its own box.
    scroller = table.locator("xpath=..")
    assert scroller.evaluate("(box) => box.scrollWidth > box.clientWidth")
    assert scroller.evaluate("(box) => getComputedStyle(box).overflowX") == "auto"
