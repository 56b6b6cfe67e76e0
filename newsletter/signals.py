"""Framework glue: a saved or deleted page source starts a new page-cache generation."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save

from newsletter.services.comments import renew_pages_showing_user
from newsletter.services.page_cache import invalidate_pages


def _invalidate(**kwargs: Any) -> None:
    invalidate_pages()


def _user_saved(*, instance: Any, created: bool, update_fields: Any, **kwargs: Any) -> None:
    renew_pages_showing_user(user=instance, created=created, update_fields=update_fields)


def connect() -> None:
    from django.contrib.auth import get_user_model

    from newsletter.models import Article, Author, Comment, CommentBan, Section
    from publication.models import Publication

    # The reader's own change of name (set_display_name) and the admin's, on Users.
    post_save.connect(_user_saved, sender=get_user_model(), dispatch_uid="pages-save-user")

    # A ban made or lifted: pages read who is banned once per generation (comments.py).
    for model in (Article, Author, Comment, CommentBan, Publication, Section):
        post_save.connect(_invalidate, sender=model, dispatch_uid=f"pages-save-{model.__name__}")
        post_delete.connect(_invalidate, sender=model, dispatch_uid=f"pages-del-{model.__name__}")
    m2m_changed.connect(
        _invalidate, sender=Article.authors.through, dispatch_uid="pages-article-authors"
    )
