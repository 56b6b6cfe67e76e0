"""Whatever text an editor pastes into an article (a control character copied from a
word processor, U+FFFF from a broken import), the feed is XML a reader can parse, with
only the characters XML 1.0 cannot hold left out; the sitemap, which writes no text of
theirs, stays XML too."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from django.core.cache import cache
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from newsletter.feeds import xml_text
from newsletter.models import Article, Author, Section
from publication.models import Publication
from tests.factories import AuthorFactory, PublishedArticleFactory, SectionFactory

pytestmark = pytest.mark.django_db

DC = "{http://purl.org/dc/elements/1.1/}"
# What XML 1.0 holds (https://www.w3.org/TR/xml/#charsets), written out again here.
XML_CHAR = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def texts(max_size: int):
    # Any text PostgreSQL stores (no U+0000; Python's own lone surrogates cannot be
    # encoded at all), control characters and U+FFFE/U+FFFF included.
    return st.text(
        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
        max_size=max_size,
    )


def expected(text: str) -> str:
    """`text` as a parser reads it back from the feed: without what XML cannot hold, and
    with line ends normalised to \\n, as every XML parser does."""
    kept = "".join(XML_CHAR.findall(text))
    return kept.replace("\r\n", "\n").replace("\r", "\n")


def feed() -> ET.Element:
    cache.clear()  # each example's feed, not the page stored for the one before
    response = Client().get("/feed/")
    assert response.status_code == 200
    return ET.fromstring(response.content)  # noqa: S314 - the site's own output


def test_a_vertical_tab_in_a_title_is_left_out_of_the_feed():
    Publication.load()
    PublishedArticleFactory(title="Tabs\x0bapart", body="<p>Body\x0bhere\ufffe.</p>")

    item = feed().find("channel/item")

    assert item is not None
    assert item.findtext("title") == "Tabsapart"
    assert "Bodyhere." in (item.findtext("description") or "")


@given(
    title=texts(300),
    subtitle=texts(200),
    body=texts(400),
    author=texts(200),
    section=texts(200),
    publication=texts(200),
)
@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_text_an_article_holds_reaches_the_feed_as_xml_without_what_xml_cannot_hold(
    title, subtitle, body, author, section, publication
):
    Article.objects.all().delete()
    Author.objects.all().delete()
    Section.objects.all().delete()
    Publication.objects.update_or_create(pk=1, defaults={"name": publication})
    article = PublishedArticleFactory(
        title=title,
        subtitle=subtitle,
        body=f"<p>{body}</p>",
        section=SectionFactory(name=section),
    )
    article.authors.add(AuthorFactory(display_name=author))

    channel = feed().find("channel")

    assert channel is not None
    assert (channel.findtext("title") or "") == expected(publication)
    item = channel.find("item")
    assert item is not None
    assert (item.findtext("title") or "") == expected(title)
    assert (item.findtext(f"{DC}creator") or "") == expected(author)
    assert [c.text or "" for c in item.findall("category")] == [expected(section)]
    assert XML_CHAR.sub("", item.findtext("description") or "") == ""


@pytest.mark.parametrize(
    ("text", "kept"),
    [("\x0b", ""), ("\x1f", ""), ("\ufffe", ""), ("\uffff", ""), ("\x7f\x85\t", "\x7f\x85\t")],
)
def test_xml_text_leaves_out_only_what_xml_cannot_hold(text, kept):
    assert xml_text(f"a{text}b") == f"a{kept}b"
    assert xml_text([f"a{text}b", 3]) == [f"a{kept}b", 3]


def test_the_sitemap_is_xml_whatever_the_names_of_what_it_lists():
    Publication.load()
    section = SectionFactory(name="Sec\x0btion\uffff", slug="geo")
    article = PublishedArticleFactory(title="Out\x0b now\x01", slug="out-now", section=section)
    article.authors.add(AuthorFactory(display_name="Ma\x0bra", slug="mara"))
    cache.clear()

    response = Client().get("/sitemap.xml")

    assert response.status_code == 200
    namespace = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    tree = ET.fromstring(response.content)  # noqa: S314 - the site's own output
    assert len(tree.findall(".//s:loc", namespace)) == 4
