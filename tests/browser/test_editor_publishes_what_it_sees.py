"""An editor pastes a photo into the body, captions it, changes the title without saving,
and publishes from the article page: the confirmation says who gets it, and the page and
the emails carry the new title and the photo, served from the site's own media storage.
"""

from __future__ import annotations

import base64
import io
import re
import urllib.request

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from newsletter.models import Article, BodyImage
from tests.browser.conftest import Site, save_screenshot
from tests.browser.harness import message_html
from tests.browser.test_editor_journey import sign_in_to_the_admin
from tests.factories import ArticleFactory, MembershipFactory, StaffUserFactory, SubscriberFactory

pytestmark = pytest.mark.browser


def _png_base64(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (20, 90, 160)).save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


PASTE = """(b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))
  const file = new File([bytes], "harbour.png", { type: "image/png" })
  const data = new DataTransfer()
  data.items.add(file)
  document.querySelector(".prose-editor [contenteditable=true]").dispatchEvent(
    new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }),
  )
}"""


def test_an_editor_pastes_a_photo_and_publishes_the_unsaved_title_after_confirming(
    site: Site, page: Page
) -> None:
    editor = StaffUserFactory(username="mara")
    editor.set_password("a-long-editor-passphrase")
    editor.save()
    SubscriberFactory(email="free@example.org")
    MembershipFactory(subscriber__email="paid@example.org")
    article = ArticleFactory(
        title="Working title", slug="harbour-report", body="<p>The harbour reopened.</p>"
    )

    sign_in_to_the_admin(site, page, username="mara", password="a-long-editor-passphrase")
    page.goto(site.link(f"/admin/newsletter/article/{article.pk}/change/"))
    area = page.locator(".prose-editor [contenteditable=true]")
    area.get_by_text("The harbour reopened.").click()
    page.keyboard.press("End")

    page.evaluate(PASTE, _png_base64(1800, 1200))
    dialog = page.locator("dialog[open]")
    dialog.get_by_label("Alt text").fill("Cranes over the reopened harbour")
    dialog.get_by_label("Image caption").fill("The container terminal at dawn")
    dialog.get_by_role("button", name="Upload and insert").click()
    expect(area.locator("figure img")).to_have_count(1)
    expect(area.locator("figcaption")).to_have_text("The container terminal at dawn")

    # A title change the editor never saved: Publish now saves it first.
    page.get_by_label("Title:", exact=True).fill("The harbour is open again")
    page.get_by_role("button", name="Publish now…").first.click()
    expect(page.get_by_text("Email 2 readers: 1 paid, 1 free")).to_be_visible()
    save_screenshot(page, "editor-publish-confirmation")
    article.refresh_from_db()
    assert article.status == Article.Status.DRAFT
    assert article.title == "The harbour is open again"
    page.get_by_role("button", name="Yes, publish now").click()
    expect(page.locator(".messagelist").get_by_text("Published.")).to_be_visible()

    image = BodyImage.objects.get()
    article.refresh_from_db()
    assert article.status == Article.Status.PUBLISHED
    assert f"body-images/{image.key}/" in article.body

    page.goto(site.link("/p/harbour-report/"))
    expect(page.get_by_role("heading", name="The harbour is open again")).to_be_visible()
    photo = page.get_by_role("img", name="Cranes over the reopened harbour")
    expect(photo).to_have_attribute("srcset", re.compile(r"w480\.jpg 480w.*w960\.jpg 960w"))
    expect(photo).to_have_attribute("width", "960")
    expect(photo).to_have_attribute("height", "640")
    assert photo.evaluate("(img) => img.complete && img.naturalWidth") > 0  # served locally
    expect(page.get_by_text("The container terminal at dawn")).to_be_visible()

    for address in ("free@example.org", "paid@example.org"):
        email = site.mail.wait_for(to=address, subject_contains="The harbour is open again")
        html = message_html(email)
        match = re.search(r'<img[^>]+src="([^"]+/email600\.jpg)"[^>]*>', html)
        assert match, html
        assert match.group(1).startswith(f"{site.url}/media/body-images/{image.key}/")
        with urllib.request.urlopen(match.group(1), timeout=10) as response:
            assert response.status == 200
            assert Image.open(io.BytesIO(response.read())).size == (600, 400)
