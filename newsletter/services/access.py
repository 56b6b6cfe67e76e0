"""Who may read an article: its visibility against subscriptions' answer about the reader.

`subscriptions.services.access` says whether a reader is paid (and remembers it for
the request); what that lets them read is decided here, so readers and money need
know nothing of articles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from newsletter.models import Article
from subscriptions.services.access import user_is_paid

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser


def can_read_full_article(
    *, user: AbstractBaseUser | AnonymousUser | None, article: Article
) -> bool:
    """Whether this reader sees the whole article, including text after the paywall."""
    if user is not None and user.is_authenticated and getattr(user, "is_staff", False):
        return True
    if article.visibility == article.Visibility.PUBLIC:
        return True
    if article.visibility == article.Visibility.SUBSCRIBERS:
        return user is not None and user.is_authenticated
    return user_is_paid(user=user)
