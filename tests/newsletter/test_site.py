"""The reader site: lists, article pages, feed, sitemap, robots.txt, the icon, error pages."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.staticfiles import finders
from django.core.files.base import ContentFile
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from PIL import Image

from newsletter.selectors import ARTICLES_PER_PAGE
from newsletter.views.site import server_error
from publication.models import Publication
from tests.factories import (
    AuthorFactory,
    CommentFactory,
    MembershipFactory,
    PublishedArticleFactory,
    SectionFactory,
    SubscriberFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def _xml(content: bytes) -> ET.Element:
    return ET.fromstring(content)  # noqa: S314 - the site's own output, not untrusted input


def _published(n: int, **kwargs):
    now = timezone.now()
    return [
        PublishedArticleFactory(
            title=f"Dispatch number {i:02d}",
            published_at=now - timedelta(hours=i),
            **kwargs,
        )
        for i in range(n)
    ]


def test_home_lists_the_latest_articles_newest_first_with_pagination(client):
    _published(ARTICLES_PER_PAGE + 3)
    first = client.get("/").content.decode()
    assert first.index("Dispatch number 00") < first.index("Dispatch number 01")
    assert f"Dispatch number {ARTICLES_PER_PAGE - 1:02d}" in first
    assert f"Dispatch number {ARTICLES_PER_PAGE:02d}" not in first
    assert 'href="?page=2"' in first

    second = client.get("/?page=2").content.decode()
    assert f"Dispatch number {ARTICLES_PER_PAGE:02d}" in second
    assert "Dispatch number 00" not in second


@pytest.mark.parametrize("page", ["99", "zero", "-1"])
def test_a_page_that_does_not_exist_is_not_found(client, page):
    _published(2)
    assert client.get("/", {"page": page}).status_code == 404


def test_section_page_lists_only_its_articles(client):
    section = SectionFactory(name="Energy & trade", slug="energy")
    PublishedArticleFactory(title="Pipelines and ports", section=section)
    PublishedArticleFactory(title="Elsewhere entirely")
    html = client.get("/s/energy/").content.decode()
    assert "Energy &amp; trade" in html
    assert "Pipelines and ports" in html
    assert "Elsewhere entirely" not in html
    assert client.get("/s/no-such-section/").status_code == 404


def test_author_page_shows_the_bio_and_their_articles(client):
    author = AuthorFactory(display_name="Mara Ellison", slug="mara", bio="Covers the Black Sea.")
    mine = PublishedArticleFactory(title="Her dispatch")
    mine.authors.add(author)
    PublishedArticleFactory(title="Someone else's dispatch")
    html = client.get("/authors/mara/").content.decode()
    assert "Covers the Black Sea." in html
    assert "Her dispatch" in html
    assert "Someone else&#x27;s dispatch" not in html


def test_article_page_shows_cover_caption_byline_date_and_section(client):
    section = SectionFactory(name="Global geopolitics", slug="geo")
    author = AuthorFactory(display_name="Tomasz Wren", slug="tomasz")
    article = PublishedArticleFactory(
        slug="ports-not-bases",
        title="Ports, Not Bases",
        subtitle="Influence travels through cranes",
        section=section,
        cover_caption="Gantry cranes at dusk",
        published_at=datetime(2026, 3, 14, 9, 30, tzinfo=UTC),
    )
    article.cover_image.save("cover.jpg", ContentFile(b"\xff\xd8\xff"), save=True)
    article.authors.add(author)

    html = client.get("/p/ports-not-bases/").content.decode()
    assert '<h1 class="article__title">Ports, Not Bases</h1>' in html
    assert "Influence travels through cranes" in html
    assert article.cover_image.url in html
    assert "<figcaption>Gantry cranes at dusk</figcaption>" in html
    assert 'href="/authors/tomasz/">Tomasz Wren</a>' in html
    assert "14 March 2026" in html
    assert 'href="/s/geo/">Global geopolitics</a>' in html
    assert '<meta property="og:image" content="http://testserver/media/covers/' in html
    assert '<meta name="twitter:card" content="summary_large_image">' in html
    assert '<link rel="canonical" href="http://testserver/p/ports-not-bases/">' in html
    assert '{% include "comments/_thread.html" %}' not in html


def test_article_page_links_support_donations_and_telegram(client, plans_on_sale):
    publication = Publication.load()
    publication.kofi_url = "https://ko-fi.com/example"
    publication.buymeacoffee_url = "https://www.buymeacoffee.com/example"
    publication.telegram_channel_url = "https://t.me/example"
    publication.save()
    article = PublishedArticleFactory()
    html = client.get(article.get_absolute_url()).content.decode()
    for link in (
        "https://ko-fi.com/example",
        "https://www.buymeacoffee.com/example",
        "https://t.me/example",
        f'href="/donate/?ref={article.slug}"',
        'action="/subscribe/"',
    ):
        assert link in html


def test_article_text_is_escaped_where_it_is_not_html(client):
    attack = '"><script>alert(1)</script>'
    section = SectionFactory(name=attack, slug="s")
    article = PublishedArticleFactory(
        title=attack,
        subtitle="",  # the excerpt (list cards, meta tags) then comes from the body's text
        body="<p>&lt;script&gt;alert(2)&lt;/script&gt;</p>",
        cover_caption=attack,
        section=section,
    )
    article.cover_image.save("cover.jpg", ContentFile(b"\xff\xd8\xff"), save=True)
    article.authors.add(AuthorFactory(display_name=attack, slug="a"))
    for path in (article.get_absolute_url(), "/", "/s/s/", "/authors/a/"):
        html = client.get(path).content.decode()
        assert "<script>alert" not in html, path
        assert "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
    html = client.get(article.get_absolute_url()).content.decode()
    assert 'alt="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in html
    assert 'content="&lt;script&gt;alert(2)&lt;/script&gt;"' in html  # og/twitter description


def test_the_feed_is_valid_rss_of_published_articles_on_the_site_url(client, settings):
    settings.SITE_URL = "https://news.example.com"
    PublishedArticleFactory(slug="first-light", title="First light")
    response = client.get("/feed/")
    assert response["Content-Type"].startswith("application/rss+xml")
    channel = _xml(response.content).find("channel")
    assert channel is not None
    items = channel.findall("item")
    assert [item.findtext("title") for item in items] == ["First light"]
    assert items[0].findtext("link") == "https://news.example.com/p/first-light/"


def test_the_sitemap_lists_published_articles_sections_and_authors(client, settings):
    settings.SITE_URL = "https://news.example.com"
    section = SectionFactory(slug="geo")
    author = AuthorFactory(slug="mara")
    article = PublishedArticleFactory(slug="out-now", section=section)
    article.authors.add(author)
    response = client.get("/sitemap.xml")
    namespace = {"s": "http://www.sitemaps.org/schemas/sitemap/0.9"}
    locations = {el.text for el in _xml(response.content).findall(".//s:loc", namespace)}
    assert locations == {
        "https://news.example.com/",
        "https://news.example.com/p/out-now/",
        "https://news.example.com/s/geo/",
        "https://news.example.com/authors/mara/",
    }


def test_robots_txt_points_to_the_sitemap_and_keeps_crawlers_out_of_private_pages(client, settings):
    settings.SITE_URL = "https://news.example.com"
    response = client.get("/robots.txt")
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert "Sitemap: https://news.example.com/sitemap.xml" in body
    assert "Disallow: /admin/" in body
    assert "Disallow: /account/" in body


def test_the_favicon_browsers_ask_for_redirects_to_the_site_icon_without_a_query(
    client, django_assert_num_queries
):
    with django_assert_num_queries(0):
        response = client.get("/favicon.ico")

    assert response.status_code == 301
    assert response["Location"] == "/static/favicon.ico"
    with Image.open(finders.find("favicon.ico")) as icon:
        assert icon.format == "ICO"
        assert {(16, 16), (32, 32)} <= set(icon.info["sizes"])


def test_the_site_s_pages_link_the_icon_by_its_static_address(client):
    html = client.get("/").content.decode()
    assert '<link rel="icon" href="/static/favicon.ico">' in html


def test_an_unknown_address_gets_the_friendly_404_page(client):
    Publication.objects.update_or_create(pk=1, defaults={"name": "The Meridian Letter"})
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    html = response.content.decode()
    assert "Page not found" in html
    assert "The Meridian Letter" in html  # the site's own layout, not Django's default


def test_the_500_page_renders_without_the_database():
    response = server_error(RequestFactory().get("/"))
    assert response.status_code == 500
    assert "Something went wrong" in response.content.decode()


def test_the_navigation_lists_sections_that_have_articles(client):
    PublishedArticleFactory(section=SectionFactory(name="Briefings", slug="briefings"))
    SectionFactory(name="Empty section", slug="empty")
    html = client.get("/").content.decode()
    assert 'href="/s/briefings/">Briefings</a>' in html
    assert "Empty section" not in html


def test_pages_only_answer_reads(client):
    article = PublishedArticleFactory()
    assert client.post(article.get_absolute_url()).status_code == 405


def test_list_pages_make_the_same_number_of_queries_however_many_articles(client):
    section = SectionFactory(slug="busy")
    author = AuthorFactory(slug="prolific")

    def queries(path: str) -> int:
        from newsletter.services.page_cache import invalidate_pages

        invalidate_pages()  # a cold render each time, shared parts included
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path).status_code == 200
        return len(captured)

    for article in _published(2, section=section):
        article.authors.add(author)
    client.get("/")  # the first request creates the publication row
    few = {path: queries(path) for path in ("/", "/s/busy/", "/authors/prolific/")}
    for article in _published(8, section=section):
        article.authors.add(author)
    many = {path: queries(path) for path in ("/", "/s/busy/", "/authors/prolific/")}
    assert many == few


def test_article_lists_show_visible_comment_counts_in_the_same_queries(client):
    discussed, quiet = _published(2)
    CommentFactory.create_batch(3, article=discussed)
    CommentFactory(article=discussed, status="hidden")
    from newsletter.services.page_cache import invalidate_pages

    client.get("/")  # the first request creates the publication row
    invalidate_pages()  # both measured pages are cold renders, shared parts included
    with CaptureQueriesContext(connection) as captured:
        body = client.get("/").content.decode()
    assert "3 comments" in body
    assert "4 comments" not in body
    CommentFactory.create_batch(5, article=quiet)
    invalidate_pages()
    with CaptureQueriesContext(connection) as again:
        body = client.get("/").content.decode()
    assert "5 comments" in body
    assert len(again) == len(captured)


def test_signed_in_readers_are_offered_an_upgrade_only_until_they_are_paid(client, plans_on_sale):
    reader = UserFactory()
    SubscriberFactory(email=reader.email, user=reader)
    client.force_login(reader)
    free_page = client.get("/").content.decode()
    assert 'href="/upgrade/">Upgrade</a>' in free_page
    assert "Become a paid subscriber" in free_page

    MembershipFactory(subscriber=reader.subscriber)
    paid_page = client.get("/").content.decode()
    assert 'href="/upgrade/">Upgrade</a>' not in paid_page
    assert "Become a paid subscriber" not in paid_page
    assert 'href="/account/">Account</a>' in paid_page


@pytest.mark.parametrize("stripe_on", [False, True])
def test_with_nothing_to_buy_no_page_offers_an_upgrade_or_donation_form(
    client, settings, stripe_on
):
    """Stripe off (a fresh install), or on with no priced plan: no link to /upgrade/."""
    settings.STRIPE_SECRET_KEY = "sk_test_broadside_0123456789" if stripe_on else ""
    article = PublishedArticleFactory(
        visibility="paid", body='<p>Free opening.</p><hr class="paywall"><p>Paid part.</p>'
    )
    reader = UserFactory()
    SubscriberFactory(email=reader.email, user=reader)

    anonymous = client.get(article.get_absolute_url()).content.decode()
    client.force_login(reader)
    signed_in = client.get(article.get_absolute_url()).content.decode()

    for page in (anonymous, signed_in):
        assert "/upgrade/" not in page
        assert "Paid subscriptions are not open yet" in page
        assert "Paid part." not in page
        assert (f'href="/donate/?ref={article.slug}"' in page) is stripe_on
