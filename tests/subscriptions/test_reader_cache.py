"""A signed-in reader's account and paid status read from the cache
(`subscriptions.services.reader_cache`): a repeat page asks the database nothing, and
every change to what the record holds shows on the reader's very next page, whichever
way it was written."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from newsletter.models import Article
from newsletter.services.content import PAYWALL_MARKER
from publication.models import Publication
from subscriptions import reader_cache
from subscriptions.models import Membership, Plan, Subscriber
from subscriptions.services import access
from subscriptions.services.groups import remove_from_group
from subscriptions.services.memberships import expire_memberships
from tests import processes
from tests.factories import (
    MembershipFactory,
    PlanFactory,
    PublishedArticleFactory,
    SubscriberFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

PAID_SENTENCE = "The members' conclusion."


@pytest.fixture(params=["locmem", "file", "redis"])
def any_cache(request, settings, tmp_path):
    """The test's default cache, `make run`'s file cache, and production's Redis."""
    if request.param == "file":
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": str(tmp_path / "cache"),
            }
        }
    elif request.param == "redis":
        settings.CACHES = {
            "default": {
                "BACKEND": "config.cache.SharedClientRedisCache",
                "LOCATION": processes.redis_database_url(5),
                "KEY_PREFIX": "test-reader-cache",
            }
        }
    from django.core.cache import cache

    cache.clear()
    yield cache
    cache.clear()


@pytest.fixture
def article() -> Article:
    Publication.load()
    return PublishedArticleFactory(
        slug="long-read",
        visibility=Article.Visibility.PAID,
        body=f"<p>Free opening.</p>{PAYWALL_MARKER}<p>{PAID_SENTENCE}</p>",
    )


def reader(name: str, **membership) -> tuple[Client, Membership]:
    user = UserFactory(username=name, first_name=name.title())
    subscriber = SubscriberFactory(user=user, email=user.email)
    membership = MembershipFactory(subscriber=subscriber, **membership)
    client = Client()
    client.force_login(user)
    return client, membership


def reads_paid_text(client: Client) -> bool:
    response = client.get("/p/long-read/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Free opening." in html
    return PAID_SENTENCE in html


def test_a_reader_s_repeat_page_asks_the_database_nothing(article, any_cache):
    client, _ = reader("pat")
    other, _ = reader("sam")
    assert reads_paid_text(client)

    with CaptureQueriesContext(connection) as first:
        assert reads_paid_text(other)  # their record is built: the user, paid, when it turns
    with CaptureQueriesContext(connection) as repeat:
        assert reads_paid_text(other)

    assert len(first) == 3, [q["sql"] for q in first.captured_queries]
    assert len(repeat) == 0, [q["sql"] for q in repeat.captured_queries]


def _cancel_by_save(m: Membership) -> None:
    m.status = Membership.Status.CANCELED
    m.save()


def _cancel_by_update(m: Membership) -> None:
    Membership.objects.filter(pk=m.pk).update(status=Membership.Status.CANCELED)


def _cancel_through_the_subscriber(m: Membership) -> None:
    m.subscriber.memberships.update(status=Membership.Status.UNPAID)


def _cancel_by_bulk_update(m: Membership) -> None:
    m.status = Membership.Status.INCOMPLETE_EXPIRED
    Membership.objects.bulk_update([m], ["status"])


def _delete(m: Membership) -> None:
    m.delete()


def _delete_by_queryset(m: Membership) -> None:
    Membership.objects.filter(pk=m.pk).delete()


def _delete_the_subscriber(m: Membership) -> None:
    m.subscriber.delete()


def _unlink_the_subscriber_by_save(m: Membership) -> None:
    subscriber = m.subscriber
    subscriber.user = None
    subscriber.save(update_fields=["user"])


def _unlink_the_subscriber_by_update(m: Membership) -> None:
    Subscriber.objects.filter(pk=m.subscriber_id).update(user=None)


def _plan_turned_into_a_group_plan(m: Membership) -> None:
    Plan.objects.filter(pk=m.plan_id).update(kind=Plan.Kind.GROUP)


def _price_found_foreign(m: Membership) -> None:
    # A subscription on a price that is not one of our plans' grants nothing.
    Membership.objects.filter(pk=m.pk).update(foreign_price=True)


def _past_due_beyond_grace(m: Membership) -> None:
    m.status = Membership.Status.PAST_DUE
    m.current_period_start = timezone.now() - access.PAST_DUE_GRACE - timedelta(hours=1)
    m.save(update_fields=["status", "current_period_start"])


CHANGES_THAT_END_ACCESS: list[Callable[[Membership], None]] = [
    _cancel_by_save,
    _cancel_by_update,
    _cancel_through_the_subscriber,
    _cancel_by_bulk_update,
    _delete,
    _delete_by_queryset,
    _delete_the_subscriber,
    _unlink_the_subscriber_by_save,
    _unlink_the_subscriber_by_update,
    _plan_turned_into_a_group_plan,
    _price_found_foreign,
    _past_due_beyond_grace,
]


@pytest.mark.parametrize("change", CHANGES_THAT_END_ACCESS, ids=lambda f: f.__name__.strip("_"))
def test_a_change_that_ends_a_reader_s_access_shows_on_their_next_page_and_only_theirs(
    article, any_cache, change
):
    client, membership = reader("pat")
    other, _ = reader("sam")
    assert reads_paid_text(client) and reads_paid_text(other)  # both records stored

    change(membership)

    assert not reads_paid_text(client)
    assert reads_paid_text(other)


def test_ending_a_comp_membership_by_the_expiry_task_and_a_group_seat_by_its_owner_show_at_once(
    article, any_cache
):
    comp_client, comp = reader(
        "comp", kind=Membership.Kind.COMP, plan=None, stripe_subscription_id=None
    )
    group_plan = PlanFactory(kind=Plan.Kind.GROUP)
    group = MembershipFactory(plan=group_plan, quantity=3)
    seat_client, seat = reader(
        "seat", kind=Membership.Kind.GROUP, plan=None, stripe_subscription_id=None, group=group
    )
    invite = group.invites.create(email=seat.subscriber.email, seat=seat)
    assert reads_paid_text(comp_client) and reads_paid_text(seat_client)

    # An expiry set in the past by the admin (no save of the membership's own), then the
    # hourly task: the task's bulk update is what the next page must see.
    Membership.objects.filter(pk=comp.pk).update(expires_at=timezone.now() + timedelta(days=1))
    assert reads_paid_text(comp_client)
    expire_memberships(now=timezone.now() + timedelta(days=2))
    remove_from_group(group=group, invite_id=invite.pk)

    assert not reads_paid_text(comp_client)
    assert not reads_paid_text(seat_client)


def _new_membership(user, subscriber: Subscriber) -> None:
    MembershipFactory(subscriber=subscriber)


def _imported_membership(user, subscriber: Subscriber) -> None:
    Membership.objects.bulk_create(
        [Membership(subscriber=subscriber, kind=Membership.Kind.COMP, status="active")]
    )


def _reactivated_by_update(user, subscriber: Subscriber) -> None:
    subscriber.memberships.update(status=Membership.Status.ACTIVE)


def _paying_subscriber_linked_by_save(user, subscriber: Subscriber) -> None:
    paying = MembershipFactory(subscriber=SubscriberFactory()).subscriber
    Subscriber.objects.filter(pk=subscriber.pk).delete()
    paying.user = user
    paying.save(update_fields=["user", "updated_at"])


def _paying_subscriber_linked_by_update(user, subscriber: Subscriber) -> None:
    paying = MembershipFactory(subscriber=SubscriberFactory()).subscriber
    Subscriber.objects.filter(pk=subscriber.pk).update(user=None)
    Subscriber.objects.filter(pk=paying.pk).update(user=user)


@pytest.mark.parametrize(
    "change",
    [
        _new_membership,
        _imported_membership,
        _reactivated_by_update,
        _paying_subscriber_linked_by_save,
        _paying_subscriber_linked_by_update,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_a_change_that_gives_a_reader_access_shows_on_their_next_page(article, any_cache, change):
    client, membership = reader("pat", status=Membership.Status.CANCELED)
    assert not reads_paid_text(client)

    change(membership.subscriber.user, membership.subscriber)

    assert reads_paid_text(client)


def test_access_that_starts_or_ends_by_the_clock_alone_shows_at_that_moment(article, any_cache):
    soon = timezone.now() + timedelta(seconds=1)
    expiring, _ = reader("expiring", kind="comp", plan=None, expires_at=soon)
    starting, _ = reader("starting", kind="gift", plan=None, starts_at=soon)
    grace, _ = reader(
        "grace",
        status=Membership.Status.PAST_DUE,
        current_period_start=soon - access.PAST_DUE_GRACE,
    )
    steady, _ = reader("steady")
    assert [reads_paid_text(c) for c in (expiring, starting, grace, steady)] == [
        True,
        False,
        True,
        True,
    ]

    time.sleep(max(0.0, (soon - timezone.now()).total_seconds()) + 0.05)

    assert [reads_paid_text(c) for c in (expiring, starting, grace, steady)] == [
        False,
        True,
        False,
        True,
    ]


def test_a_changed_password_signs_the_reader_s_other_sessions_out_at_once(article, any_cache):
    client, membership = reader("pat")
    user = membership.subscriber.user
    other_session = Client()
    other_session.force_login(user)
    assert reads_paid_text(client) and reads_paid_text(other_session)

    user.set_password("a new long passphrase")
    user.save()

    assert not reads_paid_text(client)
    assert "sessionid" not in client.cookies or not client.cookies["sessionid"].value


def test_a_deactivated_or_deleted_account_is_signed_out_at_once(article, any_cache):
    deactivated, deactivated_membership = reader("deactivated")
    deleted, deleted_membership = reader("deleted")
    kept, _ = reader("kept")
    assert all(reads_paid_text(c) for c in (deactivated, deleted, kept))

    user = deactivated_membership.subscriber.user
    user.is_active = False
    user.save(update_fields=["is_active"])
    get_user_model().objects.get(pk=deleted_membership.subscriber.user_id).delete()

    assert not reads_paid_text(deactivated)
    assert not reads_paid_text(deleted)
    assert reads_paid_text(kept)
    for client in (deactivated, deleted):
        assert client.get("/account/").status_code == 302  # to sign in


def test_signing_out_ends_the_session_at_once(article, any_cache):
    client, _ = reader("pat")
    assert reads_paid_text(client)
    cookie = client.cookies["sessionid"].value

    assert client.post("/accounts/logout/").status_code == 302

    replay = Client()
    replay.cookies["sessionid"] = cookie
    assert not reads_paid_text(replay)
    assert not reads_paid_text(client)


def test_a_record_stored_by_other_code_is_read_as_a_miss(article, any_cache):
    client, membership = reader("pat")
    any_cache.set(reader_cache.record_key(membership.subscriber.user_id), b"not a record")

    assert reads_paid_text(client)


# Generated memberships: whatever their kind, state and dates, the page says what the
# access rule says of the database, before and after a change through any path.
_offsets = st.one_of(st.none(), st.integers(min_value=-30, max_value=30).map(timedelta))
_memberships = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(
            [Membership.Kind.STRIPE, Membership.Kind.COMP, Membership.Kind.GIFT]
        ),
        "status": st.sampled_from(list(Membership.Status)),
        "expires_in": _offsets,
        "starts_in": _offsets,
        "period_started": _offsets,
        "foreign_price": st.booleans(),
    }
)


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.lists(_memberships, max_size=3),
    after=_memberships,
    path=st.sampled_from(["save", "update"]),
)
def test_the_cached_answer_is_the_access_rule_s_answer(article, before, after, path):
    from django.core.cache import cache

    cache.clear()
    Membership.objects.all().delete()
    now = timezone.now()

    def fields(spec: dict) -> dict:
        def at(offset, base):
            return None if offset is None else base + offset

        return {
            "kind": spec["kind"],
            "status": spec["status"],
            "foreign_price": spec["foreign_price"],
            "expires_at": at(spec["expires_in"], now),
            "starts_at": at(spec["starts_in"], now),
            "current_period_start": at(spec["period_started"], now - access.PAST_DUE_GRACE),
        }

    user = UserFactory(username="generated")
    subscriber = Subscriber.objects.filter(user=user).first() or SubscriberFactory(
        user=user, email=user.email
    )
    memberships = [MembershipFactory(subscriber=subscriber, **fields(spec)) for spec in before]
    client = Client()
    client.force_login(user)

    def truth() -> bool:
        return access.access_granting_memberships().filter(subscriber__user_id=user.pk).exists()

    assert reads_paid_text(client) == truth()
    assert reads_paid_text(client) == truth()  # from the record
    if memberships:
        target = memberships[0]
        if path == "save":
            for name, value in fields(after).items():
                setattr(target, name, value)
            target.save()
        else:
            Membership.objects.filter(pk=target.pk).update(**fields(after))
    else:
        MembershipFactory(subscriber=subscriber, **fields(after))
    assert reads_paid_text(client) == truth()
