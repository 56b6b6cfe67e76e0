"""A signed-in reader's account row and paid status, read from the cache on their pages.

Who calls it: `subscriptions.middleware.ReaderAuthenticationMiddleware` (who the
request's reader is, with `subscriptions.services.access.paid_status` to build a
record), `subscriptions.services.access.user_is_paid` (whether they are paid, within a
request), and the writes that change either (`subscriptions.signals`,
`subscriptions.models.AccessQuerySet`). It sits beside the models, not among the
services, because the models' querysets call it.

Every signed-in page needs the reader's User row (who they are, their name, whether their
session is still valid) and whether they are paid: two queries, and planning the paid
rule's query cost more than the rest of a shell-served article page put together. Both change
rarely next to how often pages are read, so they are kept together under one key per
reader (`Record`), and a record is used only while all of these hold:

- it was built in the current *access generation*. Every write to a row the paid rule
  reads (a membership, a plan, a subscriber's link to an account) starts a new one, for
  every reader at once: saves and deletes through signals, and the querysets' `update()`,
  `delete()`, `bulk_create()` and `bulk_update()` through `AccessQuerySet`, so no code
  that writes those rows through the ORM can forget to. Like the page cache's
  generation it is renewed now and again when the change commits, so a record built
  from the rows of before the commit is never used after it.
- the clock has not reached a moment at which the paid rule would answer otherwise by
  time alone (`valid_until`: a comp or gift membership's expiry or start, the end of a
  past-due membership's grace), worked out from the reader's memberships when the record
  is built.
- their own version is the one it was built in: each save or delete of their User row
  (a changed password, name or `is_active`, a login) renews it, now and on commit, so a
  record is never used after the row changed, however the requests interleave. A
  `User.objects...update()` sends no signal (the User model is Django's own, with no
  queryset of ours): call `user_changed(user_id=...)` after one.
- SECRET_KEY and SECRET_KEY_FALLBACKS are those it was built under.

To renew is to write a new random value, never to increment: the file cache's `incr`
is a read then a write, and two at once could bring back a number a stale record
carries. A value that is missing (new, lapsed, evicted) is written afresh, random too,
so it matches no record either. A renewal that fails (the cache unreachable) is logged
and the write that asked for it goes on: if the cache comes back with what it held, a
record built before may be used until it lapses, `RECORD_SECONDS` after it was built.
No record is stored from inside `transaction.atomic` (what it read may roll back).

A record holds the User row without its password hash (deferred: read from the
database if something asks, as the password change form does) and the session hashes
made from it, which is what the middleware checks a session against.

Outside a request (tasks, emails, the admin's lists) nothing here is used: those ask
the database.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.utils import timezone

from config import generations
from config.cache import UNREADABLE

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

logger = logging.getLogger(__name__)

ACCESS_GENERATION_KEY = "readers:access-generation"
# In every record's key: a deploy that changes what a record holds reads none of before.
RECORD_FORMAT = 2
RECORD_SECONDS = 300
# A reader's version outlives their record by far; one that lapsed (or was evicted) is
# written afresh with a new random value, which no stored record carries.
VERSION_SECONDS = 7 * 24 * 3600
# The User fields a record leaves out: read from the database only if something asks
# for them (the password change form's check of the old password does).
LEFT_OUT_OF_RECORDS = ("password",)


@dataclass(frozen=True)
class Record:
    # The access generation, the reader's own version and the secrets in use
    # (`_secrets_in_use`) it was built in.
    versions: tuple[int, int, str]
    # The User row without its password hash (`LEFT_OUT_OF_RECORDS`, deferred).
    user: AbstractBaseUser
    # What a session's hash of the password is checked against: the hash under
    # SECRET_KEY, then under each of SECRET_KEY_FALLBACKS (as `auth.get_user` checks).
    session_auth_hashes: tuple[str, ...]
    paid: bool
    # When the paid rule could first answer otherwise with no row changed; None: never.
    valid_until: datetime | None

    def usable(self, *, versions: tuple[Any, Any, str], now: datetime) -> bool:
        return self.versions == versions and (self.valid_until is None or now < self.valid_until)


# The records read in this request, by user id (`one_request`): the user and their paid
# status then come from one cache read.
_records_this_request: ContextVar[dict[Any, Record] | None] = ContextVar(
    "reader_records_this_request", default=None
)


@contextmanager
def one_request() -> Iterator[None]:
    token = _records_this_request.set({})
    try:
        yield
    finally:
        _records_this_request.reset(token)


def record_key(user_id: Any) -> str:
    return f"readers{RECORD_FORMAT}:{user_id}"


def _version_key(user_id: Any) -> str:
    return f"readers:version:{user_id}"


def access_changed() -> None:
    """Some reader's paid status may have changed: no record built before is used again.

    Now, and once more when the change commits: until then other processes still read
    the old rows, and a record one of them builds meanwhile must not outlive the commit.
    """
    _renew(ACCESS_GENERATION_KEY)
    transaction.on_commit(lambda: _renew(ACCESS_GENERATION_KEY))


def user_changed(*, user_id: Any) -> None:
    """The reader's User row changed or went: their record is not used again (now and
    when the change commits, as `access_changed`)."""
    _renew(_version_key(user_id))
    transaction.on_commit(lambda: _renew(_version_key(user_id)))


def _renew(key: str) -> None:
    """A new random value under `key`: a record is used only while the value it carries
    is the one stored, so no record built before is used again, however renewals race
    (an increment is a read then a write on the file cache, and two at once could write
    back a number a stored record carries).

    The cache unreachable: logged, not raised, so the write that asked for it (a Stripe
    event, the expiry task, an admin save) still commits. Records built before then
    may be used until they lapse (`RECORD_SECONDS`) if the cache comes back with them.
    """
    memo = _records_this_request.get()
    if memo is not None:
        memo.clear()
    try:
        cache.set(
            key, _new_version(), timeout=None if key == ACCESS_GENERATION_KEY else VERSION_SECONDS
        )
    except Exception:
        logger.exception(
            "Could not renew %s: records built before may be used for up to %d s",
            key,
            RECORD_SECONDS,
        )


def _new_version() -> int:
    return secrets.randbits(63)


def _secrets_in_use() -> str:
    """A digest of SECRET_KEY and SECRET_KEY_FALLBACKS: a record's session hashes were
    made with the secrets of its time, and a secret dropped from the fallbacks must stop
    verifying the sessions it signed."""
    return _secrets_digest(settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))


@lru_cache(maxsize=4)
def _secrets_digest(secret_key: str, fallbacks: tuple[str, ...]) -> str:
    digest = hashlib.blake2b(person=b"readers-secrets", digest_size=16)
    for secret in (secret_key, *fallbacks):
        digest.update(hashlib.sha256(str(secret).encode()).digest())
    return digest.hexdigest()


def session_auth_hashes(user: AbstractBaseUser) -> tuple[str, ...]:
    """The user's session hash under SECRET_KEY, then under each fallback."""
    return (user.get_session_auth_hash(), *user.get_session_auth_fallback_hash())


def _for_the_record(user: AbstractBaseUser) -> AbstractBaseUser:
    """A copy of `user` with `LEFT_OUT_OF_RECORDS` deferred (and the raw password a
    `set_password` may have left behind dropped)."""
    kept = copy.copy(user)
    for name in (*LEFT_OUT_OF_RECORDS, "_password"):
        kept.__dict__.pop(name, None)
    return kept


def _in_a_transaction() -> bool:
    """Whether this code runs inside `transaction.atomic` (not counting a test case's
    own, which Django marks): what it reads may be rolled back, so no record is stored
    from it."""
    return any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks)


def signed_in_user(
    *,
    user_id: Any,
    load: Callable[[], AbstractBaseUser | None],
    paid_status: Callable[..., tuple[bool, datetime | None]],
) -> AbstractBaseUser | None:
    """The reader's User, from their record when it is usable, else from `load()` (the
    authentication backend's own `get_user`) and `paid_status(user_pk=, now=)` (whether
    they are paid, and until when by the clock alone:
    `subscriptions.services.access.paid_status`), with a new record stored.

    The versions are read before the rows a new record is built from: a change that
    commits in between renews them again, so that record is never used.
    """
    keys = [ACCESS_GENERATION_KEY, _version_key(user_id), record_key(user_id)]
    secrets_in_use = _secrets_in_use()
    # The process keeps the record it last read or built (`config.generations.memo`):
    # then only the versions are read, and it is used only if it was built in them.
    record = generations.memo.get(keys[2])
    values = _read_many(keys if record is None else keys[:2])
    versions = (values.get(keys[0]), values.get(keys[1]), secrets_in_use)
    now = timezone.now()
    if isinstance(record, Record) and not record.usable(versions=versions, now=now):
        values = _read_many(keys)  # the stored one may be newer than the process's
        versions = (values.get(keys[0]), values.get(keys[1]), secrets_in_use)
        record = None
    if record is None:
        record = values.get(keys[2])
        if isinstance(record, Record) and record.usable(versions=versions, now=now):
            generations.memo.put(keys[2], record)
    if isinstance(record, Record) and record.usable(versions=versions, now=now):
        _remember(user_id, record)
        return record.user
    if None in versions:
        # A missing value is written afresh, random: it matches no stored record.
        cache.add(keys[0], _new_version(), timeout=None)
        cache.add(keys[1], _new_version(), timeout=VERSION_SECONDS)
        stored = cache.get_many(keys[:2])
        versions = (stored.get(keys[0]), stored.get(keys[1]), secrets_in_use)
    user = load()
    if user is None:
        return None
    generation, own_version, _ = versions
    if generation is None or own_version is None:  # a cache that keeps nothing
        return user
    paid, valid_until = paid_status(user_pk=user.pk, now=now)
    record = Record(
        versions=(int(generation), int(own_version), secrets_in_use),
        user=_for_the_record(user),
        session_auth_hashes=session_auth_hashes(user),
        paid=paid,
        valid_until=valid_until,
    )
    if not _in_a_transaction():
        # Pickled now, before the request gives the object any state of its own.
        cache.set(keys[2], record, RECORD_SECONDS)
        generations.memo.put(keys[2], record)
    _remember(user_id, record)
    return user


def _remember(user_id: Any, record: Record) -> None:
    memo = _records_this_request.get()
    if memo is not None:
        memo[user_id] = record


def remembered_session_auth_hashes(*, user_id: Any) -> tuple[str, ...] | None:
    """The reader's session hashes (`Record.session_auth_hashes`) from the record read in
    this request; None: not read."""
    memo = _records_this_request.get()
    record = memo.get(user_id) if memo is not None else None
    return record.session_auth_hashes if record is not None else None


def remembered_paid(*, user_id: Any) -> bool | None:
    """Whether the reader is paid, from the record read in this request; None: not read."""
    memo = _records_this_request.get()
    record = memo.get(user_id) if memo is not None else None
    return record.paid if record is not None else None


def _read_many(keys: list[str]) -> dict[str, Any]:
    """`cache.get_many` (with the keys the request reads ahead, `config.generations`),
    with a record that cannot be read back left out."""
    try:
        return generations.read_many(keys)
    except UNREADABLE:
        cache.delete(keys[-1])
        return generations.read_many(keys[:-1])
