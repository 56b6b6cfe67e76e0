"""Telegram distribution: one post per article to the configured channel."""

from __future__ import annotations

from newsletter.models import Article, TelegramPost


def queue_telegram_post(*, article: Article) -> TelegramPost | None:
    """Create the article's TelegramPost and queue it (Telegram issue)."""
    return None
