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
