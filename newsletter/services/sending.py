"""Email sends: from a published article to one Delivery per eligible subscriber."""

from __future__ import annotations

from newsletter.models import Article, EmailSend


def create_email_send(*, article: Article) -> EmailSend | None:
    """Create the article's EmailSend and its deliveries (email delivery issue)."""
    return None
