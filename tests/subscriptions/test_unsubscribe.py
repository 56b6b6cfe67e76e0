"""One-click unsubscribe (ARCHITECTURE.md flow 8, RFC 8058)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from subscriptions.models import Subscriber
from subscriptions.services.tokens import unsubscribe_url
from subscriptions.services.unsubscribe import unsubscribe_subscriber
from tests.factories import SubscriberFactory

pytestmark = pytest.mark.django_db


def unsubscribe_path(subscriber: Subscriber) -> str:
    url = unsubscribe_url(subscriber_id=subscriber.pk)
    assert url.startswith("http://testserver/unsubscribe/")
    return url.removeprefix("http://testserver")


@pytest.fixture
def mail_client() -> Client:
    """A mail client's one-click POST: no cookies, no CSRF token, CSRF checks on."""
    return Client(enforce_csrf_checks=True)


def test_get_shows_a_confirm_button_and_changes_nothing(client):
    subscriber = SubscriberFactory(email="reader@example.com")
    response = client.get(unsubscribe_path(subscriber))
    assert response.status_code == 200
    assert b"reader@example.com" in response.content
    # The page's own form (the footer's signup form posts too, so look for its button).
    assert re.search(
        rb'<form method="post" action="">\s*<button[^>]*>Unsubscribe<', response.content
    )
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.ACTIVE
    assert subscriber.unsubscribed_at is None


def test_one_click_post_without_cookies_or_csrf_unsubscribes_at_once(mail_client):
    subscriber = SubscriberFactory()
    response = mail_client.post(
        unsubscribe_path(subscriber),
        data="List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.UNSUBSCRIBED
    assert subscriber.unsubscribed_at is not None
    assert subscriber.status_reason == "unsubscribe link"


def test_repeating_the_post_answers_200_and_changes_nothing_more(mail_client):
    subscriber = SubscriberFactory()
    path = unsubscribe_path(subscriber)
    assert mail_client.post(path).status_code == 200
    subscriber.refresh_from_db()
    first = subscriber.unsubscribed_at
    assert mail_client.post(path).status_code == 200
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.UNSUBSCRIBED
    assert subscriber.unsubscribed_at == first


def test_after_unsubscribing_get_says_so_and_offers_to_resubscribe(client, mail_client):
    subscriber = SubscriberFactory()
    mail_client.post(unsubscribe_path(subscriber))
    response = client.get(unsubscribe_path(subscriber))
    body = response.content.decode()
    assert "<h1>You're unsubscribed</h1>" in body
    # Every page's footer links /subscribe/; this one offers it in its own text.
    assert '<a href="/subscribe/">Subscribe again</a>' in body
    assert ">Unsubscribe</button>" not in body


def test_a_tampered_token_is_refused_and_changes_nothing(client, mail_client):
    subscriber = SubscriberFactory()
    other = SubscriberFactory()
    path = unsubscribe_path(subscriber)
    token = path.split("/")[2]
    forged = f"/unsubscribe/{other.pk}:{token.split(':')[1]}/"
    for response in [
        mail_client.post(forged),
        client.get(forged),
        mail_client.post("/unsubscribe/x/"),
    ]:
        assert response.status_code == 400
        assert b"not valid" in response.content
    assert set(Subscriber.objects.values_list("status", flat=True)) == {"active"}


def test_a_link_of_an_erased_reader_still_answers_200(mail_client):
    subscriber = SubscriberFactory()
    path = unsubscribe_path(subscriber)
    subscriber.delete()
    response = mail_client.post(path)
    assert response.status_code == 200
    assert b"no longer on our list" in response.content


def test_unsubscribing_does_not_turn_a_bounced_address_back_into_an_unsubscribed_one():
    subscriber = SubscriberFactory(status=Subscriber.Status.BOUNCED)
    assert unsubscribe_subscriber(subscriber=subscriber, reason="test") is False
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.BOUNCED


def test_the_database_refuses_a_status_outside_the_list():
    from django.db import IntegrityError

    subscriber = SubscriberFactory()
    with pytest.raises(IntegrityError):
        Subscriber.objects.filter(pk=subscriber.pk).update(status="subscribed")


# --- Several readers: only the one the link or the action names changes ------------------


@pytest.fixture
def readers():
    """Four active readers; the link's own reader is neither the first nor the last."""
    return [SubscriberFactory(email=f"reader{n}@example.com") for n in range(4)]


def statuses() -> dict[str, str]:
    return dict(Subscriber.objects.values_list("email", "status"))


def test_the_one_click_post_unsubscribes_the_links_own_reader_and_nobody_else(mail_client, readers):
    own = readers[2]
    response = mail_client.post(unsubscribe_path(own))

    assert response.status_code == 200
    assert own.email.encode() in response.content
    assert statuses() == {
        "reader0@example.com": "active",
        "reader1@example.com": "active",
        "reader2@example.com": "unsubscribed",
        "reader3@example.com": "active",
    }
    untouched = Subscriber.objects.exclude(pk=own.pk)
    assert list(untouched.values_list("unsubscribed_at", flat=True)) == [None, None, None]
    assert set(untouched.values_list("status_reason", flat=True)) == {""}


def test_the_confirm_page_names_the_links_own_reader(client, readers):
    body = client.get(unsubscribe_path(readers[1])).content.decode()
    assert "reader1@example.com" in body
    for other in ("reader0@example.com", "reader2@example.com", "reader3@example.com"):
        assert other not in body


def test_unsubscribing_one_reader_leaves_the_others_subscribed(readers):
    before = {s.pk: s.updated_at for s in Subscriber.objects.all()}
    assert unsubscribe_subscriber(subscriber=readers[3], reason="asked by letter") is True
    after = {s.pk: s.updated_at for s in Subscriber.objects.all()}
    assert after[readers[3].pk] > before[readers[3].pk]
    assert all(after[pk] == before[pk] for pk in before if pk != readers[3].pk)
    assert statuses()["reader3@example.com"] == "unsubscribed"
    assert list(statuses().values()).count("active") == 3
    readers[3].refresh_from_db()
    assert readers[3].status_reason == "asked by letter"


def test_the_admin_action_unsubscribes_exactly_the_readers_chosen(readers):
    from subscriptions.services.unsubscribe import unsubscribe_subscribers

    Subscriber.objects.filter(pk=readers[0].pk).update(status=Subscriber.Status.COMPLAINED)
    changed = unsubscribe_subscribers(
        subscriber_ids=[readers[0].pk, readers[1].pk, readers[3].pk], reason="admin"
    )
    # The complained address stays complained and is not counted.
    assert changed == 2
    assert statuses() == {
        "reader0@example.com": "complained",
        "reader1@example.com": "unsubscribed",
        "reader2@example.com": "active",
        "reader3@example.com": "unsubscribed",
    }


def test_a_provider_report_changes_only_the_address_it_names(readers):
    from subscriptions.services.unsubscribe import record_provider_event

    assert record_provider_event(email=" Reader1@Example.com ", event_type="bounced") == 1
    assert record_provider_event(email="reader2@example.com", event_type="delivered") == 0
    assert record_provider_event(email="", event_type="complained") == 0
    assert (
        record_provider_event(
            email="reader3@example.com", event_type="complained", description="spam button"
        )
        == 1
    )
    assert statuses() == {
        "reader0@example.com": "active",
        "reader1@example.com": "bounced",
        "reader2@example.com": "active",
        "reader3@example.com": "complained",
    }
    reasons = dict(Subscriber.objects.values_list("email", "status_reason"))
    assert reasons["reader1@example.com"] == "provider: bounced"
    assert reasons["reader3@example.com"] == "provider: complained (spam button)"


def test_a_complaint_outranks_a_bounce_which_outranks_an_unsubscribe_and_none_goes_back(
    readers,
):
    from subscriptions.services.unsubscribe import record_provider_event

    email = readers[0].email
    steps = [
        ("unsubscribed", 1, "unsubscribed"),
        ("bounced", 1, "bounced"),
        ("unsubscribed", 0, "bounced"),
        ("complained", 1, "complained"),
        ("bounced", 0, "complained"),
        ("unsubscribed", 0, "complained"),
    ]
    for event_type, changed, status in steps:
        assert record_provider_event(email=email, event_type=event_type) == changed
        assert statuses()[email] == status
    assert list(statuses().values()).count("active") == 3


def test_a_pending_reader_can_unsubscribe_and_the_long_reason_is_cut_to_fit():
    pending = SubscriberFactory(status=Subscriber.Status.PENDING)
    other = SubscriberFactory(status=Subscriber.Status.PENDING)
    assert unsubscribe_subscriber(subscriber=pending, reason="x" * 300) is True
    pending.refresh_from_db()
    other.refresh_from_db()
    assert pending.status == Subscriber.Status.UNSUBSCRIBED
    assert pending.status_reason == "x" * 200
    assert pending.unsubscribed_at is not None
    assert other.status == Subscriber.Status.PENDING


def test_the_unsubscribe_link_names_its_reader_and_a_forged_one_names_nobody(readers):
    from subscriptions.services.tokens import InvalidToken
    from subscriptions.services.unsubscribe import (
        subscriber_for_unsubscribe_token,
        unsubscribe_by_token,
    )

    token = unsubscribe_path(readers[2]).split("/")[2]
    assert subscriber_for_unsubscribe_token(token=token) == readers[2]
    assert unsubscribe_by_token(token=token).status == Subscriber.Status.UNSUBSCRIBED
    with pytest.raises(InvalidToken):
        unsubscribe_by_token(token=f"{readers[1].pk}:{token.split(':')[1]}")
    assert statuses()["reader1@example.com"] == "active"
