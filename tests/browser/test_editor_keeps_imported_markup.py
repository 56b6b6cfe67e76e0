"""An imported article opened and saved in the editor keeps its footnotes and players.

The Substack import turns footnotes into `fn-N`/`fnref-N` anchors and keeps YouTube and
Vimeo players as iframes; the editor builds its own document from the body on load, and
whatever its schema does not know is dropped at the next save.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from newsletter.models import Article
from newsletter.services.content import sanitize_body
from tests.browser.conftest import Site
from tests.factories import ArticleFactory, StaffUserFactory

pytestmark = pytest.mark.browser

BODY = (
    '<p>Shipping insurers moved first.<sup><a id="fnref-1" href="#fn-1">1</a></sup></p>'
    '<iframe src="https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ" allowfullscreen></iframe>'
    '<p id="fn-1"><a href="#fnref-1">1.</a> Lloyd\'s market bulletin, March.</p>'
)


def test_saving_an_imported_article_in_the_editor_keeps_footnotes_and_players(
    site: Site, page: Page
) -> None:
    editor = StaffUserFactory(username="marta")
    editor.set_password("a-long-editor-passphrase")
    editor.save()
    article = ArticleFactory(visibility=Article.Visibility.PUBLIC, body=sanitize_body(html=BODY))
    before = article.body
    assert 'id="fnref-1"' in before and 'id="fn-1"' in before and "<iframe" in before

    page.goto(site.link(f"/admin/newsletter/article/{article.pk}/change/"))
    page.get_by_label("Username").fill("marta")
    page.get_by_label("Password").fill("a-long-editor-passphrase")
    page.get_by_role("button", name="Log in").click()
    editor_area = page.locator(".ProseMirror[contenteditable=true]")
    # An edit, so that the body saved is the one the editor serialises, not the old text.
    editor_area.get_by_text("Shipping insurers moved first.").click()
    page.keyboard.press("Home")
    page.keyboard.type("Edited. ")
    page.get_by_role("button", name="Save and continue editing").first.click()
    expect(page.locator(".messagelist .success").first).to_be_visible()

    article.refresh_from_db()
    assert "Edited. Shipping insurers" in article.body
    assert 'id="fnref-1"' in article.body
    assert 'id="fn-1"' in article.body
    assert "youtube-nocookie.com/embed/dQw4w9WgXcQ" in article.body
