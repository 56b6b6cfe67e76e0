"""The reader record (`subscriptions.reader_cache`) under faults a review found: renewals
racing between processes on the file cache, the cache unreachable while a write is made,
what the cache holds of a reader, writes that bypass the signals, a record built inside a
transaction that rolls back."""

# The fixtures imported from test_reader_cache are named as the tests' arguments.
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import re
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache
from django.db import transaction
from django.test import Client, override_settings
from django.utils import timezone

from newsletter.models import Comment
from subscriptions import reader_cache
from subscriptions.models import Membership
from subscriptions.services.access import paid_status
from subscriptions.services.memberships import expire_memberships
from tests.factories import MembershipFactory, SubscriberFactory, UserFactory
from tests.subscriptions.test_reader_cache import (  # noqa: F401  (fixtures)
    PAID_SENTENCE,
    any_cache,
    article,
    reader,
    reads_paid_text,
)

pytestmark = pytest.mark.django_db
User = get_user_model()


# --- Renewals racing between processes ------------------------------------------------


def _renew_many(times: int) -> None:
    try:
        for _ in range(times):
            reader_cache.access_changed()  # its on-commit half waits on the inherited atomic
    finally:
        os._exit(0)  # no atexit, no closing of the parent's database connection


def _watch(stop: Any, seen: Any) -> None:
    from django.core.cache import cache

    try:
        values: list[Any] = []
        while not stop.is_set():
            value = cache.get(reader_cache.ACCESS_GENERATION_KEY)
            if not values or values[-1] != value:
                values.append(value)
        seen.put(values)
        seen.close()
        seen.join_thread()  # the list written out before the process ends
    finally:
        os._exit(0)


def test_a_generation_once_replaced_never_comes_back_however_processes_race_on_the_file_cache(
    article, settings, tmp_path
):
    """Every generation a watcher saw could be one a stale record carries (a record built
    from rows a commit was about to change): none of them is ever current again."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        }
    }
    from django.core.cache import cache

    client, membership = reader("pat")
    assert reads_paid_text(client)  # a record stored under the first generation
    first = cache.get(reader_cache.ACCESS_GENERATION_KEY)
    Membership.objects.filter(pk=membership.pk).update(status=Membership.Status.CANCELED)

    fork = multiprocessing.get_context("fork")
    stop, seen = fork.Event(), fork.Queue()
    watcher = fork.Process(target=_watch, args=(stop, seen))
    watcher.start()
    renewers = [fork.Process(target=_renew_many, args=(150,)) for _ in range(4)]
    for process in renewers:
        process.start()
    for process in renewers:
        process.join(timeout=120)
    stop.set()
    values = seen.get(timeout=60)
    watcher.join(timeout=10)

    assert all(p.exitcode == 0 for p in renewers)
    assert len(values) > 10  # the watcher saw the renewals happen
    returned = [v for i, v in enumerate(values) if v in values[:i]]
    assert returned == [], f"{len(returned)} generations came back"
    assert first not in values[1:] and cache.get(reader_cache.ACCESS_GENERATION_KEY) != first
    assert not reads_paid_text(client)


# --- The cache unreachable ------------------------------------------------------------

UNREACHABLE = {
    "default": {
        "BACKEND": "config.cache.SharedClientRedisCache",
        "LOCATION": "redis://127.0.0.1:1",  # nothing listens
    }
}


def test_writes_to_access_and_accounts_commit_while_the_cache_is_unreachable_and_say_so(
    caplog, django_capture_on_commit_callbacks
):
    paying = MembershipFactory(subscriber=SubscriberFactory(user=UserFactory(username="pat")))
    comp = MembershipFactory(
        kind=Membership.Kind.COMP,
        plan=None,
        stripe_subscription_id=None,
        expires_at=timezone.now() - timedelta(hours=1),
    )
    kept = MembershipFactory()
    user = paying.subscriber.user
    with (
        override_settings(CACHES=UNREACHABLE),
        caplog.at_level(logging.ERROR, logger="subscriptions.reader_cache"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        # What a cancel event's handler, the admin, the expiry task and a deactivation do.
        paying.status = Membership.Status.CANCELED
        paying.save()
        Membership.objects.filter(pk=paying.pk).update(status=Membership.Status.UNPAID)
        expire_memberships(now=timezone.now())
        user.is_active = False
        user.save(update_fields=["is_active"])

    paying.refresh_from_db()
    comp.refresh_from_db()
    kept.refresh_from_db()
    assert paying.status == Membership.Status.UNPAID
    assert comp.status == Membership.Status.EXPIRED
    assert kept.status == Membership.Status.ACTIVE
    assert not User.objects.get(pk=user.pk).is_active
    renewed = [r.getMessage() for r in caplog.records]
    assert any(reader_cache.ACCESS_GENERATION_KEY in m for m in renewed), renewed
    assert any(f"readers:version:{user.pk}" in m for m in renewed), renewed


# --- What the cache holds ---------------------------------------------------------------


def _stored_blobs(cache: Any) -> list[bytes]:
    """Every value the cache holds, as the bytes it stores (decompressed)."""
    if isinstance(cache, LocMemCache):
        raw = list(cache._cache.values())
    elif isinstance(cache, FileBasedCache):
        raw = []
        for path in Path(cache._dir).rglob("*.djcache"):
            with path.open("rb") as stored:
                pickle.load(stored)  # noqa: S301  (the expiry, written by the test's own cache)
                raw.append(zlib.decompress(stored.read()))
    else:
        client = cache._cache.get_client()
        raw = [client.get(key) for key in client.keys(f"{cache.key_prefix}*")]
    blobs = []
    for blob in raw:
        blobs.append(blob)
        with contextlib.suppress(zlib.error):
            blobs.append(zlib.decompress(blob))
    return blobs


HASH_SHAPES = re.compile(rb"pbkdf2_|argon2|bcrypt|scrypt|md5\$|sha1\$|\$[0-9a-zA-Z+/=]{20,}\$")


def test_neither_a_reader_s_record_nor_a_comment_thread_puts_a_password_hash_or_a_commenter_s_address_in_the_cache(  # noqa: E501
    article, any_cache, settings
):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    editor = UserFactory(username="ed", is_staff=True, is_superuser=True)
    editor.set_password("correct horse battery staple")
    editor.save()
    commenters = []
    for name in ("ann", "bob", "cyd"):
        commenter = UserFactory(username=name, first_name=name.title())
        commenter.set_password(f"{name}'s long passphrase")
        commenter.save()
        commenters.append(commenter)
        Comment.objects.create(article=article, user=commenter, body=f"{name.title()} says hi.")
    client, membership = reader("pat")
    pat = membership.subscriber.user
    pat.set_password("pat's long passphrase")
    pat.save()
    client.force_login(pat)  # the new password ended the session
    editor_client = Client()
    assert editor_client.login(username="ed", password="correct horse battery staple")

    for signed_in in (client, editor_client):
        for _ in range(2):  # the record built, then read
            html = signed_in.get("/p/long-read/").content.decode()
            assert "Ann says hi." in html and "Bob" in html  # the thread is on the page
            assert PAID_SENTENCE in html

    blobs = _stored_blobs(caches["default"])
    stored = b"\n".join(blobs)
    assert b"Ann says hi." in stored  # the thread's rows are in the cache
    assert str(pat.first_name).encode() in stored  # and the reader's record
    assert HASH_SHAPES.findall(stored) == []
    for user in (editor, pat, *commenters):
        assert user.password.encode() not in stored
    for commenter in commenters:
        assert commenter.email.encode() not in stored


def test_a_reader_changes_their_password_from_a_page_served_by_their_record(article, any_cache):
    """The record's User has no password hash; the form's check of the old one reads it
    from the database, and the reader's other sessions end."""
    user = UserFactory(username="pat")
    user.set_password("the old long passphrase")
    user.save()
    client, other = Client(), Client()
    for session in (client, other):
        assert session.login(username="pat", password="the old long passphrase")
    for session in (client, other, client):  # both records built, then one read
        assert session.get("/account/").status_code == 200

    wrong = client.post(
        "/accounts/password/change/",
        {
            "oldpassword": "not it at all",
            "password1": "a new passphrase 42",
            "password2": "a new passphrase 42",
        },
    )
    assert wrong.status_code == 200  # the form again, with its error
    assert User.objects.get(pk=user.pk).check_password("the old long passphrase")

    right = client.post(
        "/accounts/password/change/",
        {
            "oldpassword": "the old long passphrase",
            "password1": "a new passphrase 42",
            "password2": "a new passphrase 42",
        },
    )
    assert right.status_code == 302
    assert User.objects.get(pk=user.pk).check_password("a new passphrase 42")
    assert client.get("/account/").status_code == 200  # this session kept
    assert other.get("/account/").status_code == 302  # the other one signed out


def test_a_session_signed_under_a_fallback_secret_is_kept_and_one_under_a_dropped_secret_ends(
    article, any_cache, settings
):
    settings.SECRET_KEY = "the old secret, long enough for a test " * 2
    settings.SECRET_KEY_FALLBACKS = []
    rotated, _ = reader("rotated")
    dropped, _ = reader("dropped")
    kept, _ = reader("kept")
    assert all(reads_paid_text(c) for c in (rotated, dropped, kept))  # records stored

    old_secret = settings.SECRET_KEY
    settings.SECRET_KEY = "the new secret, long enough for a test " * 2
    settings.SECRET_KEY_FALLBACKS = [old_secret]
    assert reads_paid_text(rotated)  # verified by the fallback, re-signed under the new one
    settings.SECRET_KEY_FALLBACKS = []

    assert reads_paid_text(rotated)
    assert not reads_paid_text(dropped)
    kept.force_login(get_user_model().objects.get(username="kept"))
    assert reads_paid_text(kept)


def test_a_record_built_inside_a_transaction_that_rolls_back_is_not_kept(article, any_cache):
    user = UserFactory(username="roll")
    subscriber = SubscriberFactory(user=user, email=user.email)
    client = Client()
    client.force_login(user)
    assert not reads_paid_text(client)

    with contextlib.suppress(RuntimeError), transaction.atomic():
        MembershipFactory(subscriber=subscriber)
        # request.user first read here, by code that writes first and reads it after.
        with reader_cache.one_request():
            reader_cache.signed_in_user(
                user_id=user.pk, load=lambda: User.objects.get(pk=user.pk), paid_status=paid_status
            )
        raise RuntimeError("the payment provider said no: roll back")

    assert not Membership.objects.filter(subscriber=subscriber).exists()
    assert not reads_paid_text(client)


# --- Writes the signals do not see ---------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [{"is_active": False}, {"is_staff": False}, {"password": "!unusable"}],
    ids=["deactivated", "demoted", "password"],
)
def test_a_user_row_changed_by_update_shows_on_the_next_page_once_user_changed_is_called(
    article, any_cache, change
):
    staff = UserFactory(username="ed", is_staff=True)
    changed, other = Client(), Client()
    changed.force_login(staff)
    other.force_login(UserFactory(username="jo", is_staff=True))
    assert reads_paid_text(changed) and reads_paid_text(other)  # staff read everything

    User.objects.filter(pk=staff.pk).update(**change)
    reader_cache.user_changed(user_id=staff.pk)

    assert not reads_paid_text(changed)
    assert reads_paid_text(other)
