from datetime import timedelta

import pytest
from django.utils import timezone

from newsletter.models import Article
from newsletter.services.publishing import publish_article, publish_due_articles
from tests.factories import ArticleFactory

pytestmark = pytest.mark.django_db


def test_publishing_a_draft_sets_published_at_once():
    article = ArticleFactory()
    first = publish_article(article=article)
    assert first.newly_published
    published_at = first.article.published_at
    assert published_at is not None

    again = publish_article(article=first.article)
    assert not again.newly_published
    article.refresh_from_db()
    assert article.status == Article.Status.PUBLISHED
    assert article.published_at == published_at


def test_scheduler_publishes_due_articles_and_only_those():
    now = timezone.now()
    due = ArticleFactory(status=Article.Status.SCHEDULED, publish_at=now - timedelta(minutes=1))
    later = ArticleFactory(status=Article.Status.SCHEDULED, publish_at=now + timedelta(hours=1))
    draft = ArticleFactory()

    published = publish_due_articles(now=now)

    assert [r.article.pk for r in published] == [due.pk]
    for article, status in ((due, "published"), (later, "scheduled"), (draft, "draft")):
        article.refresh_from_db()
        assert article.status == status
