"""The signed links we email: a confirmation link lives three days to the minute, an
unsubscribe link for ever, and neither can be turned into another reader's link."""

from __future__ import annotations

import time

import pytest
from django.core import signing

from subscriptions.models import Subscriber
from subscriptions.services.tokens import (
    InvalidToken,
    confirmation_url,
    make_confirmation_token,
    make_unsubscribe_token,
    read_confirmation_source,
    read_confirmation_token,
    read_unsubscribe_token,
    unsubscribe_url,
)
from tests.factories import SubscriberFactory

pytestmark = pytest.mark.django_db

THREE_DAYS = 3 * 24 * 3600


def made_ago(seconds: float, monkeypatch, **token) -> str:
    """A confirmation token as it was made `seconds` ago."""
    then = time.time() - seconds
    with monkeypatch.context() as patch:
        patch.setattr(signing.time, "time", lambda: then)
        return make_confirmation_token(**token)


@pytest.mark.parametrize(
    "age, valid",
    [
        (0, True),
        (3600 * 8, True),
        (THREE_DAYS - 60, True),
        (THREE_DAYS + 60, False),
        (THREE_DAYS * 2, False),
    ],
)
def test_a_confirmation_link_works_for_three_days_and_not_a_minute_more(
    age, valid, monkeypatch, client
):
    pending = SubscriberFactory(email="Pending@Example.com", status=Subscriber.Status.PENDING)
    token = made_ago(age, monkeypatch, subscriber_id=pending.pk, email=pending.email)
    if valid:
        assert read_confirmation_token(token=token) == (pending.pk, "pending@example.com")
    else:
        with pytest.raises(InvalidToken, match=r"^This confirmation link has expired\.$"):
            read_confirmation_token(token=token)

    response = client.get(f"/subscribe/confirm/{token}/")

    pending.refresh_from_db()
    assert response.status_code == (200 if valid else 400)
    assert pending.status == (Subscriber.Status.ACTIVE if valid else Subscriber.Status.PENDING)


def test_a_confirmation_link_is_not_an_unsubscribe_link_nor_the_other_way_round():
    subscriber = SubscriberFactory()
    confirm = make_confirmation_token(subscriber_id=subscriber.pk, email=subscriber.email)
    leave = make_unsubscribe_token(subscriber_id=subscriber.pk)
    with pytest.raises(InvalidToken, match=r"^This unsubscribe link is not valid\.$"):
        read_unsubscribe_token(token=confirm)
    with pytest.raises(InvalidToken, match=r"^This confirmation link is not valid\.$"):
        read_confirmation_token(token=leave)
    with pytest.raises(InvalidToken, match="not valid"):
        read_confirmation_token(token=confirm[:-2] + "xx")
    assert read_unsubscribe_token(token=leave) == subscriber.pk


def test_an_unsubscribe_link_never_expires_and_names_its_own_reader(monkeypatch):
    first, second = SubscriberFactory(), SubscriberFactory()
    token = make_unsubscribe_token(subscriber_id=second.pk)
    years_later = time.time() + 10 * 365 * 24 * 3600
    monkeypatch.setattr(signing.time, "time", lambda: years_later)
    assert read_unsubscribe_token(token=token) == second.pk != first.pk


def test_a_signed_value_that_is_not_a_number_is_refused_as_an_unsubscribe_link():
    forged = signing.Signer(salt="broadside.subscriptions.unsubscribe").sign("not-a-number")
    with pytest.raises(InvalidToken, match=r"^This unsubscribe link is not valid\.$"):
        read_unsubscribe_token(token=forged)


@pytest.mark.parametrize(("source", "credited"), [(7, 7), ("7", None), (7.5, None), ([7], None)])
def test_a_confirmation_link_credits_an_article_only_when_it_names_one_by_number(source, credited):
    """Only a whole number is an article's id: anything else signed into the link
    credits no article."""
    signed = signing.dumps(
        {"s": 1, "e": "reader@example.com", "a": source}, salt="broadside.subscriptions.confirm"
    )
    assert read_confirmation_source(token=signed) == credited


def test_a_confirmation_link_made_without_a_source_credits_no_article():
    made = make_confirmation_token(subscriber_id=1, email="reader@example.com")
    assert read_confirmation_source(token=made) is None
    made = make_confirmation_token(subscriber_id=1, email="reader@example.com", source_article_id=7)
    assert read_confirmation_source(token=made) == 7


def test_the_links_are_absolute_on_the_site_and_carry_their_readers_token(settings):
    settings.SITE_URL = "https://news.example.org"
    subscriber = SubscriberFactory(email="link@example.com")
    confirm = confirmation_url(subscriber_id=subscriber.pk, email="LINK@example.com")
    assert confirm.startswith("https://news.example.org/subscribe/confirm/")
    token = confirm.removeprefix("https://news.example.org/subscribe/confirm/").rstrip("/")
    assert read_confirmation_token(token=token) == (subscriber.pk, "link@example.com")
    leave = unsubscribe_url(subscriber_id=subscriber.pk)
    assert leave.startswith("https://news.example.org/unsubscribe/")
    token = leave.removeprefix("https://news.example.org/unsubscribe/").rstrip("/")
    assert read_unsubscribe_token(token=token) == subscriber.pk
