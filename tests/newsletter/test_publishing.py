"""Publishing, scheduling and the scheduler: one service, called from everywhere."""

from datetime import timedelta

import pytest
from django.utils import timezone

from newsletter.models import Article, Delivery, EmailSend, TelegramPost
from newsletter.services import publishing
from newsletter.services.publishing import (
    PublishError,
    publish_article,
    publish_due_articles,
    schedule_article,
    unschedule_article,
)
from tests.factories import ArticleFactory, SubscriberFactory

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


def test_publishing_twice_creates_no_second_send_or_post(settings):
    settings.TELEGRAM_BOT_TOKEN = "123:test-token"
    settings.TELEGRAM_CHAT_ID = "@channel"
    SubscriberFactory()
    article = ArticleFactory()
    first = publish_article(article=article)
    assert first.email_send is not None
    assert first.email_send.recipient_count == 1
    assert first.telegram_post is not None

    again = publish_article(article=first.article)

    assert again.email_send is None
    assert again.telegram_post is None
    assert EmailSend.objects.count() == 1
    assert Delivery.objects.count() == 1
    assert TelegramPost.objects.count() == 1


def test_publishing_without_email_records_that_nobody_is_emailed():
    article = ArticleFactory()
    result = publish_article(article=article, send_email=False)
    assert result.article.email_audience == Article.EmailAudience.NOBODY
    assert result.email_send is None


def test_an_article_without_a_title_cannot_be_published():
    article = ArticleFactory(title="  ")
    with pytest.raises(PublishError, match="needs a title"):
        publish_article(article=article)
    article.refresh_from_db()
    assert article.status == Article.Status.DRAFT
    assert article.published_at is None


def test_scheduling_sets_the_time_and_the_status():
    article = ArticleFactory()
    when = timezone.now() + timedelta(days=1)
    schedule_article(article=article, publish_at=when)
    article.refresh_from_db()
    assert article.status == Article.Status.SCHEDULED
    assert article.publish_at == when
    assert article.published_at is None


def test_scheduling_refuses_the_past_and_published_articles():
    with pytest.raises(PublishError, match="future"):
        schedule_article(article=ArticleFactory(), publish_at=timezone.now() - timedelta(1))
    published = publish_article(article=ArticleFactory()).article
    with pytest.raises(PublishError, match="already published"):
        schedule_article(article=published, publish_at=timezone.now() + timedelta(1))


def test_unscheduling_returns_the_article_to_draft():
    article = ArticleFactory()
    schedule_article(article=article, publish_at=timezone.now() + timedelta(hours=1))
    unschedule_article(article=article)
    article.refresh_from_db()
    assert article.status == Article.Status.DRAFT
    assert publish_due_articles(now=timezone.now() + timedelta(hours=2)) == []


def test_a_scheduled_article_keeps_its_first_published_at_when_the_scheduler_runs_again():
    now = timezone.now()
    due = ArticleFactory(status=Article.Status.SCHEDULED, publish_at=now - timedelta(minutes=5))
    publish_due_articles(now=now)
    due.refresh_from_db()
    published_at = due.published_at
    assert published_at is not None

    assert publish_due_articles(now=now + timedelta(minutes=1)) == []
    due.refresh_from_db()
    assert due.published_at == published_at


def test_one_unpublishable_scheduled_article_does_not_hold_back_the_others():
    now = timezone.now()
    broken = ArticleFactory(
        title="", status=Article.Status.SCHEDULED, publish_at=now - timedelta(minutes=2)
    )
    fine = ArticleFactory(status=Article.Status.SCHEDULED, publish_at=now - timedelta(minutes=1))

    published = publish_due_articles(now=now)

    assert [r.article.pk for r in published] == [fine.pk]
    broken.refresh_from_db()
    assert broken.status == Article.Status.SCHEDULED


def test_the_beat_task_publishes_due_articles():
    from newsletter.tasks import publish_due_articles as publish_due_articles_task

    due = ArticleFactory(
        status=Article.Status.SCHEDULED, publish_at=timezone.now() - timedelta(seconds=1)
    )
    assert publish_due_articles_task.delay().get() == 1
    due.refresh_from_db()
    assert due.status == Article.Status.PUBLISHED


def test_the_beat_schedule_runs_the_publishing_task_every_minute(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["publish-due-articles"]
    assert entry["task"] == "newsletter.tasks.publish_due_articles"
    assert entry["schedule"] <= 60


def test_scheduling_an_outdated_copy_of_a_published_article_is_refused():
    article = ArticleFactory()
    stale_copy = Article.objects.get(pk=article.pk)  # e.g. an admin page opened earlier
    publish_article(article=article)

    with pytest.raises(PublishError, match="already published"):
        schedule_article(article=stale_copy, publish_at=timezone.now() + timedelta(hours=1))
    article.refresh_from_db()
    assert article.status == Article.Status.PUBLISHED
    assert article.publish_at is None


def test_an_article_that_fails_to_publish_does_not_hold_back_later_ones(monkeypatch, caplog):
    now = timezone.now()
    failing = ArticleFactory(status=Article.Status.SCHEDULED, publish_at=now - timedelta(hours=1))
    later = ArticleFactory(status=Article.Status.SCHEDULED, publish_at=now - timedelta(minutes=1))
    create_email_send = publishing.create_email_send

    def email_send_failing_for_one_article(*, article):
        if article.pk == failing.pk:
            raise RuntimeError("the audience query timed out")
        return create_email_send(article=article)

    monkeypatch.setattr(publishing, "create_email_send", email_send_failing_for_one_article)

    published = publish_due_articles(now=now)

    assert [r.article.pk for r in published] == [later.pk]
    failing.refresh_from_db()
    assert failing.status == Article.Status.SCHEDULED  # rolled back, retried next run
    assert failing.published_at is None
    assert "the audience query timed out" in caplog.text
