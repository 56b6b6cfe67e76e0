"""A signed-in paid reader's article page: a bounded number of queries, whatever the
article's size, and the parts every reader shares built once."""

from __future__ import annotations

import pytest

from newsletter.models import Article
from newsletter.services.content import PAYWALL_MARKER
from publication.models import Publication
from tests.factories import AuthorFactory, CommentFactory, PublishedArticleFactory, SectionFactory

pytestmark = pytest.mark.django_db

# None: the signed-in user and their paid status come from their record in the cache
# (`subscriptions.services.reader_cache`, built on their first page), who may comment,
# the article, its authors and its discussion from the shared fragments.
ARTICLE_PAGE_QUERIES = 0


def paid_article(*, comments: int, authors: int) -> Article:
    article = PublishedArticleFactory(
        slug="long-read",
        visibility=Article.Visibility.PAID,
        section=SectionFactory(name="Global geopolitics"),
        body=f"<p>Free opening.</p>{PAYWALL_MARKER}<p>The members' conclusion.</p>",
    )
    article.authors.set(AuthorFactory.create_batch(authors))
    for n in range(comments):
        parent = CommentFactory(article=article, body=f"Remark {n}.")
        CommentFactory(article=article, parent=parent, body=f"Reply {n}.")
    return article


@pytest.mark.parametrize(("comments", "authors"), [(0, 1), (12, 3)])
def test_a_paid_reader_s_article_page_runs_a_bounded_number_of_queries(
    paid_reader_client, django_assert_num_queries, comments, authors
):
    Publication.load()
    paid_article(comments=comments, authors=authors)
    paid_reader_client.get("/p/long-read/")  # a first visit builds the shared parts

    with django_assert_num_queries(ARTICLE_PAGE_QUERIES):
        response = paid_reader_client.get("/p/long-read/")

    assert response.status_code == 200
    assert "The members' conclusion." in response.content.decode()
    assert "private" in response["Cache-Control"]
    assert "X-Page-Cache" not in response


def test_the_shared_parts_show_a_change_at_once(paid_reader_client):
    publication = Publication.load()
    paid_article(comments=0, authors=1)
    first = paid_reader_client.get("/p/long-read/").content.decode()
    assert "Global geopolitics" in first

    publication.name = "The Renamed Dispatch"
    publication.save()
    renamed = paid_reader_client.get("/p/long-read/").content.decode()
    assert "The Renamed Dispatch" in renamed

    article = Article.objects.get(slug="long-read")
    section = article.section
    section.name = "Regional security"
    section.save()
    assert "Regional security" in paid_reader_client.get("/p/long-read/").content.decode()


def test_a_reader_who_stops_paying_loses_the_paid_text_on_their_next_page(paid_reader_client):
    from subscriptions.models import Membership

    Publication.load()
    paid_article(comments=0, authors=1)
    assert "The members' conclusion." in paid_reader_client.get("/p/long-read/").content.decode()
    Membership.objects.update(status=Membership.Status.CANCELED)
    page = paid_reader_client.get("/p/long-read/").content.decode()
    assert "The members' conclusion." not in page
