"""Publishing: the one state change that takes an article to its readers.

`publish_article` is called by the admin (the article page's Publish now, after its
form is saved, and the list's actions), the scheduler task and `manage.py
publish_article`. Distribution (email, Telegram) hangs off it here.
`publication_audience` tells the editor, before they confirm, who will get it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from newsletter import telegram
from newsletter.models import Article, Delivery, EmailSend, TelegramPost
from newsletter.services.sending import audience, create_email_send
from newsletter.services.telegram_posting import queue_telegram_post

logger = logging.getLogger(__name__)


class PublishError(Exception):
    """The article cannot be published as asked; the message says why."""


@dataclass(frozen=True)
class PublishResult:
    article: Article
    newly_published: bool
    email_send: EmailSend | None
    telegram_post: TelegramPost | None


@dataclass(frozen=True)
class PublicationAudience:
    """Who an article reaches when it is published now, as its saved settings stand."""

    paid: int
    free: int
    telegram: bool

    @property
    def email_total(self) -> int:
        return self.paid + self.free

    def summary(self) -> str:
        """One line for the confirmation: "Email 12,345 readers: 1,234 paid, 11,111 free"."""
        if self.email_total == 0:
            email = "Email nobody"
        else:
            readers = "reader" if self.email_total == 1 else "readers"
            parts = [f"{self.paid:,} paid"]
            if self.free:
                parts.append(f"{self.free:,} free")
            email = f"Email {self.email_total:,} {readers}: {', '.join(parts)}"
        return f"{email}; {'post to Telegram' if self.telegram else 'no Telegram post'}"


def publication_audience(*, article: Article) -> PublicationAudience:
    """Who gets the article: the same selection `create_email_send` makes, counted."""
    telegram_post = article.post_to_telegram and telegram.is_configured()
    already_sent = EmailSend.objects.filter(article=article).exists()
    if article.email_audience == Article.EmailAudience.NOBODY or already_sent:
        return PublicationAudience(paid=0, free=0, telegram=telegram_post)
    counts = audience(article=article).aggregate(
        paid=Count("pk", filter=Q(segment=Delivery.Segment.PAID.value)),
        free=Count("pk", filter=Q(segment=Delivery.Segment.FREE.value)),
    )
    return PublicationAudience(paid=counts["paid"], free=counts["free"], telegram=telegram_post)


def publish_article(*, article: Article, send_email: bool = True) -> PublishResult:
    """Publish now. Idempotent: publishing a published article changes and sends nothing.

    `send_email=False` publishes without email ("publish without email").
    """
    with transaction.atomic():
        article = Article.objects.select_for_update().get(pk=article.pk)
        if article.status == Article.Status.PUBLISHED:
            return PublishResult(
                article=article, newly_published=False, email_send=None, telegram_post=None
            )
        if not article.title.strip():
            raise PublishError("An article needs a title before it can be published.")
        now = timezone.now()
        article.status = Article.Status.PUBLISHED
        article.published_at = now
        if not send_email:
            article.email_audience = Article.EmailAudience.NOBODY
        article.save(update_fields=["status", "published_at", "email_audience", "updated_at"])
        email_send = create_email_send(article=article)
        telegram_post = queue_telegram_post(article=article)
    return PublishResult(
        article=article, newly_published=True, email_send=email_send, telegram_post=telegram_post
    )


def schedule_article(*, article: Article, publish_at: datetime) -> Article:
    """Schedule a draft for later; the beat task `publish_due_articles` publishes it."""
    if publish_at <= timezone.now():
        raise PublishError("Pick a time in the future, or publish now.")
    with transaction.atomic():
        # Locked, so that a concurrent publish cannot be turned back into a schedule.
        locked = Article.objects.select_for_update().get(pk=article.pk)
        if locked.status == Article.Status.PUBLISHED:
            raise PublishError("This article is already published.")
        locked.status = Article.Status.SCHEDULED
        locked.publish_at = publish_at
        locked.save(update_fields=["status", "publish_at", "updated_at"])
    return locked


def unschedule_article(*, article: Article) -> Article:
    """Take a scheduled article back to draft; its publish time is kept for next time."""
    with transaction.atomic():
        locked = Article.objects.select_for_update().get(pk=article.pk)
        if locked.status != Article.Status.SCHEDULED:
            raise PublishError("Only a scheduled article can be unscheduled.")
        locked.status = Article.Status.DRAFT
        locked.save(update_fields=["status", "updated_at"])
    return locked


def publish_due_articles(*, now: datetime | None = None) -> list[PublishResult]:
    """Publish every scheduled article whose time has come, and only those."""
    now = now or timezone.now()
    due = Article.objects.filter(status=Article.Status.SCHEDULED, publish_at__lte=now)
    results = []
    for article in due.order_by("publish_at"):
        try:
            result = publish_article(article=article)
        except PublishError as exc:
            # One unpublishable article must not hold back the others; it stays
            # scheduled and is retried on the next run, after the editor fixes it.
            logger.error("Could not publish scheduled article %s: %s", article.pk, exc)
            continue
        except Exception:
            # Nor may an unexpected failure (its transaction is rolled back): the
            # earliest due article comes first on every run, so one that keeps failing
            # would otherwise keep every later one from ever being published.
            logger.exception("Failed to publish scheduled article %s", article.pk)
            continue
        if result.newly_published:
            results.append(result)
    return results
