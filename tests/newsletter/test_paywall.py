"""Paid content never reaches a reader without access, wherever the article shows up."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from newsletter.models import Article
from tests.factories import (
    ArticleFactory,
    AuthorFactory,
    MembershipFactory,
    PublishedArticleFactory,
    SectionFactory,
    SubscriberFactory,
    UserFactory,
)
from tests.html import element

pytestmark = pytest.mark.django_db

FREE_TEXT = "The opening argument everyone may read"
PAID_TEXT = "The confidential scenario only paid readers get"
PAID_BODY = f'<p>{FREE_TEXT}.</p><hr class="paywall"><p>{PAID_TEXT}.</p>'


@pytest.fixture
def section():
    return SectionFactory(name="Global geopolitics", slug="global-geopolitics")


@pytest.fixture
def paid_article(section):
    return PublishedArticleFactory(
        slug="the-paid-one",
        subtitle="",
        body=PAID_BODY,
        visibility=Article.Visibility.PAID,
        section=section,
    )


@pytest.fixture
def free_reader_client(client):
    user = UserFactory()
    SubscriberFactory(email=user.email, user=user)
    client.force_login(user)
    return client


@pytest.fixture(params=["anonymous", "free reader"])
def reader_without_access(request, client):
    if request.param == "anonymous":
        return client
    return request.getfixturevalue("free_reader_client")


def test_article_page_stops_at_the_paywall_for_readers_without_access(
    reader_without_access, paid_article
):
    response = reader_without_access.get(paid_article.get_absolute_url())
    html = response.content.decode()
    assert response.status_code == 200
    assert FREE_TEXT in html
    assert PAID_TEXT not in html
    assert 'id="paywall"' in html


def test_a_signed_in_free_reader_is_offered_the_upgrade(
    free_reader_client, paid_article, plans_on_sale
):
    html = free_reader_client.get(paid_article.get_absolute_url()).content.decode()
    # The header and footer link /upgrade/ on every page: look in the paywall box only.
    box = element(html, id="paywall")
    # Naming the article, so that the upgrade is credited to it.
    assert f'<a class="button" href="/upgrade/?ref={paid_article.slug}">Upgrade</a>' in box
    assert "Sign in" not in box
    assert PAID_TEXT not in element(html, css_class="article__body")


def test_a_paid_reader_reads_the_whole_article_without_the_paywall_box(
    paid_reader_client, paid_article
):
    html = paid_reader_client.get(paid_article.get_absolute_url()).content.decode()
    assert FREE_TEXT in html
    assert PAID_TEXT in html
    assert 'id="paywall"' not in html


def test_a_paid_article_without_a_marker_shows_nothing_of_its_body(client):
    article = PublishedArticleFactory(
        subtitle="", body=f"<p>{PAID_TEXT}</p>", visibility=Article.Visibility.PAID
    )
    html = client.get(article.get_absolute_url()).content.decode()
    assert PAID_TEXT not in html
    assert 'id="paywall"' in html


def test_a_subscribers_only_article_opens_to_any_signed_in_reader(free_reader_client, client):
    article = PublishedArticleFactory(body=PAID_BODY, visibility=Article.Visibility.SUBSCRIBERS)
    assert PAID_TEXT in free_reader_client.get(article.get_absolute_url()).content.decode()
    free_reader_client.logout()
    assert PAID_TEXT not in client.get(article.get_absolute_url()).content.decode()


@pytest.mark.parametrize("path", ["/", "/s/global-geopolitics/", "/authors/the-writer/"])
def test_article_lists_show_only_the_free_part(reader_without_access, paid_article, path):
    paid_article.authors.add(AuthorFactory(slug="the-writer"))
    html = reader_without_access.get(path).content.decode()
    assert paid_article.title in html
    assert FREE_TEXT in html  # the excerpt comes from the free part
    assert PAID_TEXT not in html


def test_lists_show_no_paid_text_even_to_a_paid_reader(paid_reader_client, paid_article):
    # Lists are the same for everyone: they show excerpts, never bodies.
    html = paid_reader_client.get("/").content.decode()
    assert PAID_TEXT not in html


def test_feed_cuts_paid_articles_at_the_paywall(paid_article, paid_reader_client):
    # Even a signed-in paid reader gets the anonymous feed: feeds are shared and cached.
    body = paid_reader_client.get("/feed/").content.decode()
    assert FREE_TEXT in body
    assert PAID_TEXT not in body
    assert "The rest of this article is for paid subscribers" in body


def test_sitemap_lists_the_article_without_its_text(client, paid_article):
    body = client.get("/sitemap.xml").content.decode()
    assert "/p/the-paid-one/" in body
    assert PAID_TEXT not in body


def test_meta_tags_never_carry_paid_text(client):
    # No subtitle: the description falls back to the body, and must stop at the marker.
    article = PublishedArticleFactory(
        subtitle="", body=PAID_BODY, visibility=Article.Visibility.PAID
    )
    html = client.get(article.get_absolute_url()).content.decode()
    head = html.split("</head>")[0]
    assert f'<meta property="og:description" content="{FREE_TEXT}.">' in head
    assert PAID_TEXT not in head


def test_a_paid_readers_visit_does_not_leak_into_an_anonymous_response(client, paid_article):
    user = UserFactory()
    MembershipFactory(subscriber=SubscriberFactory(email=user.email, user=user))
    client.force_login(user)
    paid = client.get(paid_article.get_absolute_url())
    assert PAID_TEXT in paid.content.decode()
    # Downstream caches must not keep or share the paid reader's copy.
    assert "private" in paid["Cache-Control"]
    assert "Cookie" in paid["Vary"]

    client.logout()
    anonymous = client.get(paid_article.get_absolute_url())
    assert PAID_TEXT not in anonymous.content.decode()
    assert "Cookie" in anonymous["Vary"]


def test_the_pages_around_a_paid_article_carry_none_of_its_paid_text(
    reader_without_access, paid_article
):
    # The discussion page, the sign-in pages that lead back to the article (a reader
    # already signed in is sent on to it), and a comment refused to a reader without
    # access (the anonymous one is sent to sign in, the free one gets the form again).
    for path in (
        "/p/the-paid-one/comments/",
        "/accounts/login/?next=/p/the-paid-one/",
        "/accounts/login/code/?next=/p/the-paid-one/",
    ):
        response = reader_without_access.get(path, follow=True)
        assert response.status_code == 200, path
        assert PAID_TEXT not in response.content.decode(), path
    refused = reader_without_access.post(
        "/p/the-paid-one/comments/", {"body": "Let me in", "parent": ""}
    )
    assert refused.status_code in (302, 403)
    assert PAID_TEXT not in refused.content.decode()


@pytest.mark.parametrize(
    "status, publish_at",
    [(Article.Status.DRAFT, None), (Article.Status.SCHEDULED, timedelta(hours=2))],
)
def test_drafts_and_scheduled_articles_are_unreachable_for_readers(
    free_reader_client, status, publish_at
):
    article = ArticleFactory(
        slug="not-yet",
        title="Not yet out",
        status=status,
        publish_at=timezone.now() + publish_at if publish_at else None,
    )
    assert free_reader_client.get("/p/not-yet/").status_code == 404
    for path in ("/", "/feed/", "/sitemap.xml"):
        body = free_reader_client.get(path).content.decode()
        assert article.title not in body
        assert "/p/not-yet/" not in body


def test_an_anonymous_visitor_reads_no_paid_text_when_a_paid_subscriber_has_no_account(client):
    # Payment Links and imports make paid subscribers without a user account; an
    # anonymous visitor has no account either, and must not be taken for one of them.
    paying = SubscriberFactory(email="paid.by.link@example.com", user=None)
    MembershipFactory(subscriber=paying)
    article = PublishedArticleFactory(body=PAID_BODY, visibility=Article.Visibility.PAID)

    html = client.get(article.get_absolute_url()).content.decode()

    body = element(html, css_class="article__body")
    assert FREE_TEXT in body
    assert PAID_TEXT not in body
    box = element(html, id="paywall")
    assert "This article is for paid subscribers" in box
    assert "Already a paid subscriber? Sign in" in box


def test_a_cached_whole_text_is_never_served_to_a_reader_without_access(
    reader_without_access, paid_article
):
    from django.core.cache import cache
    from django.test import Client

    paid = Client()
    user = UserFactory()
    MembershipFactory(subscriber=SubscriberFactory(email=user.email, user=user))
    paid.force_login(user)
    url = paid_article.get_absolute_url()
    assert PAID_TEXT in paid.get(url).content.decode()
    # The page keeps the whole text it rendered for the paid reader, for the next one.
    stored = [key for key in cache._cache if f"article-text:{paid_article.pk}:" in key]
    assert any(key.endswith(":full") for key in stored)

    for _ in range(2):  # the first render of the free text, then its shared copy
        html = reader_without_access.get(url).content.decode()
        assert FREE_TEXT in html
        assert PAID_TEXT not in html
        assert 'id="paywall"' in html
    # And the paid reader still gets the whole text after the free one was stored.
    assert PAID_TEXT in paid.get(url).content.decode()


def test_the_shared_text_follows_an_edit_and_a_move_behind_the_paywall(client, paid_reader_client):
    from django.test import Client

    article = PublishedArticleFactory(subtitle="", body=f"<p>{FREE_TEXT}.</p><p>{PAID_TEXT}.</p>")
    url = article.get_absolute_url()
    anonymous = Client()
    assert PAID_TEXT in anonymous.get(url).content.decode()
    assert PAID_TEXT in paid_reader_client.get(url).content.decode()
    article.body = PAID_BODY
    article.visibility = Article.Visibility.PAID
    article.save()
    html = anonymous.get(url).content.decode()
    assert FREE_TEXT in html
    assert PAID_TEXT not in html
    # The excerpt in the page's description is the new free part's, not the old body's.
    assert PAID_TEXT not in html.split("</head>")[0]
    assert PAID_TEXT in paid_reader_client.get(url).content.decode()
