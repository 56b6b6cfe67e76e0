"""Framework glue: a write to what a reader's cached record holds renews it
(`subscriptions.services.reader_cache`). Querysets' bulk writes are covered by
`subscriptions.models.AccessQuerySet`."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_migrate, post_save

from subscriptions import reader_cache


def _access_changed(**kwargs: Any) -> None:
    reader_cache.access_changed()


def _subscriber_saved(*, created: bool, update_fields: Any, **kwargs: Any) -> None:
    # The paid rule reads a subscriber only through its link to an account, and a new
    # subscriber has no membership yet (the membership's own save renews it).
    if not created and (update_fields is None or {"user", "user_id"} & set(update_fields)):
        reader_cache.access_changed()


def _user_changed(*, instance: Any, **kwargs: Any) -> None:
    reader_cache.user_changed(user_id=instance.pk)


def connect() -> None:
    from django.contrib.auth import get_user_model

    from subscriptions.models import Membership, Plan, Subscriber

    models: tuple[type[Any], ...] = (Membership, Plan, Subscriber)
    for model in models:
        if model is not Subscriber:  # its saves: `_subscriber_saved`
            post_save.connect(
                _access_changed, sender=model, dispatch_uid=f"readers-save-{model.__name__}"
            )
        post_delete.connect(
            _access_changed, sender=model, dispatch_uid=f"readers-del-{model.__name__}"
        )
    post_save.connect(_subscriber_saved, sender=Subscriber, dispatch_uid="readers-save-Subscriber")
    # A data migration writes through historical models, which have no AccessQuerySet.
    post_migrate.connect(_access_changed, dispatch_uid="readers-migrate")
    user = get_user_model()
    post_save.connect(_user_changed, sender=user, dispatch_uid="readers-save-user")
    post_delete.connect(_user_changed, sender=user, dispatch_uid="readers-del-user")
