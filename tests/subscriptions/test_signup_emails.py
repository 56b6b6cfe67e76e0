"""The two signup emails and the confirmation, with several readers in the table: each
email goes to the reader it was queued for, and only while they are in the state it is
for."""

from __future__ import annotations

import pytest
from django.core import mail
from django.utils import timezone

from subscriptions.models import Subscriber
from subscriptions.services import signup
from subscriptions.services.tokens import (
    InvalidToken,
    make_confirmation_token,
    read_unsubscribe_token,
)
from tests.factories import SubscriberFactory

pytestmark = pytest.mark.django_db

S = Subscriber.Status


@pytest.fixture
def readers():
    """One reader in each state, the active and pending ones two of each."""
    return {
        "active": SubscriberFactory(email="active@example.com", status=S.ACTIVE),
        "active2": SubscriberFactory(email="active2@example.com", status=S.ACTIVE),
        "pending": SubscriberFactory(
            email="pending@example.com", status=S.PENDING, confirmed_at=None
        ),
        "pending2": SubscriberFactory(
            email="pending2@example.com", status=S.PENDING, confirmed_at=None
        ),
        "unsubscribed": SubscriberFactory(email="left@example.com", status=S.UNSUBSCRIBED),
        "bounced": SubscriberFactory(email="bounced@example.com", status=S.BOUNCED),
    }


def test_the_welcome_goes_to_the_reader_it_was_queued_for_with_their_own_links(readers):
    assert signup.send_welcome_email(subscriber_id=readers["active2"].pk) is True

    (message,) = mail.outbox
    assert message.to == ["active2@example.com"]
    assert message.subject == "Welcome aboard"
    assert "New articles will arrive at active2@example.com." in message.body
    token = message.body.split("http://testserver/unsubscribe/")[1].split("/")[0]
    assert read_unsubscribe_token(token=token) == readers["active2"].pk


@pytest.mark.parametrize("state", ["pending", "unsubscribed", "bounced"])
def test_no_welcome_goes_to_a_reader_who_is_not_on_the_list(readers, state):
    assert signup.send_welcome_email(subscriber_id=readers[state].pk) is False
    assert mail.outbox == []


def test_the_confirmation_goes_to_the_pending_reader_it_was_queued_for(readers):
    assert signup.send_confirmation_email(subscriber_id=readers["pending2"].pk) is True

    (message,) = mail.outbox
    assert message.to == ["pending2@example.com"]
    assert message.subject == "Confirm your subscription"
    assert "3 days" in message.body
    path = message.body.split("http://testserver/subscribe/confirm/")[1].split("/")[0]
    confirmed = signup.confirm_subscriber(token=path)
    assert confirmed == readers["pending2"]
    assert Subscriber.objects.get(pk=readers["pending"].pk).status == S.PENDING


@pytest.mark.parametrize("state", ["active", "unsubscribed", "bounced"])
def test_no_confirmation_goes_to_a_reader_who_is_not_waiting_for_one(readers, state):
    assert signup.send_confirmation_email(subscriber_id=readers[state].pk) is False
    assert mail.outbox == []


def test_confirming_activates_only_the_links_reader_and_records_it(
    readers, django_capture_on_commit_callbacks
):
    pending = readers["pending"]
    token = make_confirmation_token(subscriber_id=pending.pk, email="PENDING@example.com")
    before = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        confirmed = signup.confirm_subscriber(token=token)

    confirmed.refresh_from_db()
    assert confirmed.pk == pending.pk
    assert confirmed.status == S.ACTIVE
    assert confirmed.status_reason == "confirmed by email"
    assert before <= confirmed.confirmed_at <= timezone.now()
    assert confirmed.unsubscribed_at is None
    assert confirmed.user is not None
    assert confirmed.user.email == "pending@example.com"
    statuses = dict(Subscriber.objects.values_list("email", "status"))
    assert statuses["pending2@example.com"] == S.PENDING
    assert [message.to for message in mail.outbox] == [["pending@example.com"]]
    assert mail.outbox[0].subject == "Welcome aboard"


def test_confirming_twice_changes_nothing_the_second_time(
    readers, django_capture_on_commit_callbacks
):
    pending = readers["pending"]
    token = make_confirmation_token(subscriber_id=pending.pk, email=pending.email)
    with django_capture_on_commit_callbacks(execute=True):
        first = signup.confirm_subscriber(token=token)
    first.refresh_from_db()
    with django_capture_on_commit_callbacks(execute=True):
        second = signup.confirm_subscriber(token=token)
    second.refresh_from_db()
    assert second.confirmed_at == first.confirmed_at
    assert len(mail.outbox) == 1


@pytest.mark.parametrize("state", ["unsubscribed", "bounced"])
def test_a_confirmation_link_cannot_bring_back_a_reader_who_left(readers, state):
    gone = readers[state]
    token = make_confirmation_token(subscriber_id=gone.pk, email=gone.email)
    message = r"^This confirmation link is no longer valid: the address left the list since\.$"
    with pytest.raises(InvalidToken, match=message):
        signup.confirm_subscriber(token=token)
    gone.refresh_from_db()
    assert gone.status == state


def test_a_confirmation_link_for_another_readers_address_confirms_nobody(readers):
    token = make_confirmation_token(
        subscriber_id=readers["pending"].pk, email="pending2@example.com"
    )
    with pytest.raises(InvalidToken, match=r"^This confirmation link is no longer valid\.$"):
        signup.confirm_subscriber(token=token)
    assert Subscriber.objects.filter(status=S.PENDING).count() == 2


def test_a_welcome_the_mail_server_refuses_does_not_undo_the_confirmation(
    readers, settings, django_capture_on_commit_callbacks
):
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2
    pending = readers["pending"]
    token = make_confirmation_token(subscriber_id=pending.pk, email=pending.email)

    with django_capture_on_commit_callbacks(execute=True):
        confirmed = signup.confirm_subscriber(token=token)

    assert confirmed.status == S.ACTIVE
    pending.refresh_from_db()
    assert pending.status == S.ACTIVE


def test_a_confirmation_the_mail_server_refuses_does_not_undo_the_signup(
    settings, django_capture_on_commit_callbacks
):
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2

    with django_capture_on_commit_callbacks(execute=True):
        result = signup.subscribe(email="new@example.com", ip="203.0.113.9", source="/")

    assert result.confirmation_sent is True
    assert Subscriber.objects.get(email="new@example.com").status == S.PENDING


# --- subscribe(): what a signup records and answers ------------------------------------------


def test_a_new_signup_is_pending_with_its_name_and_consent_recorded(
    readers, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        result = signup.subscribe(
            email="Newcomer@Example.COM", ip="203.0.113.9", source="/p/x/", name="N" * 250
        )

    assert result.confirmation_sent is True
    # One normal form (subscriptions/services/addresses.py): the domain and the local
    # part lower-cased, so the reader is found by equality.
    subscriber = Subscriber.objects.get(email="newcomer@example.com")
    assert result.subscriber == subscriber
    assert subscriber.status == S.PENDING
    assert subscriber.name == "N" * 200
    assert subscriber.consent_ip == "203.0.113.9"
    assert subscriber.consent_source == "/p/x/"
    assert [message.to for message in mail.outbox] == [["newcomer@example.com"]]


@pytest.mark.parametrize("state", ["active", "complained"])
def test_a_signup_of_an_address_on_the_list_or_that_complained_sends_nothing(
    readers, state, django_capture_on_commit_callbacks
):
    subscriber = readers.get(state) or SubscriberFactory(
        email="complained@example.com", status=S.COMPLAINED
    )
    with django_capture_on_commit_callbacks(execute=True):
        result = signup.subscribe(email=subscriber.email.upper(), ip=None, source="/")
    assert result.subscriber == subscriber
    assert result.confirmation_sent is False
    assert mail.outbox == []
    subscriber.refresh_from_db()
    assert subscriber.status == state


def test_a_second_signup_within_five_minutes_sends_no_second_confirmation(
    readers, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = signup.subscribe(email="twice@example.com", ip=None, source="/")
        again = signup.subscribe(email="twice@example.com", ip=None, source="/")
    assert first.confirmation_sent is True
    assert again.subscriber == first.subscriber
    assert again.confirmation_sent is False
    assert len(mail.outbox) == 1


def left_long_ago(reader):
    Subscriber.objects.filter(pk=reader.pk).update(status=S.UNSUBSCRIBED, confirmation_sent_at=None)


def test_a_signup_without_a_name_records_none_and_a_later_one_adds_it_once(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        signup.subscribe(email="nameless@example.com", ip=None, source="/")
    reader = Subscriber.objects.get(email="nameless@example.com")
    assert reader.name == ""

    left_long_ago(reader)
    signup.subscribe(email="nameless@example.com", ip=None, source="/", name="M" * 250)
    reader.refresh_from_db()
    assert reader.name == "M" * 200

    left_long_ago(reader)
    signup.subscribe(email="nameless@example.com", ip=None, source="/", name="Someone else")
    reader.refresh_from_db()
    assert reader.name == "M" * 200  # a name the reader gave is not replaced

    left_long_ago(reader)
    signup.subscribe(email="nameless@example.com", ip=None, source="/")
    reader.refresh_from_db()
    assert reader.name == "M" * 200
    assert reader.status == S.PENDING


def test_a_long_source_page_is_cut_to_fit(django_capture_on_commit_callbacks):
    long_source = "/p/" + "a" * 600
    with django_capture_on_commit_callbacks(execute=True):
        signup.subscribe(email="from.far@example.com", ip=None, source=long_source)
    assert Subscriber.objects.get().consent_source == long_source[:500]
