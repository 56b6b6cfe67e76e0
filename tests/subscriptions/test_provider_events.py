"""Bounces, complaints and unsubscribes reported by the email provider (via anymail)."""

from __future__ import annotations

import base64
import json

import pytest

from subscriptions.models import Subscriber
from tests.factories import SubscriberFactory

pytestmark = pytest.mark.django_db

WEBHOOK = "/anymail/postmark/tracking/"
WEBHOOK_AUTH = "hook:s3cret"


@pytest.fixture(autouse=True)
def _webhook_secret(settings):
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    settings.ANYMAIL = {"WEBHOOK_SECRET": WEBHOOK_AUTH, "POSTMARK_SERVER_TOKEN": "test-token"}


def post_event(client, payload: dict, credentials: str = WEBHOOK_AUTH):
    auth = base64.b64encode(credentials.encode()).decode()
    return client.post(
        WEBHOOK,
        data=json.dumps(payload),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {auth}",
    )


def bounce(email: str, kind: str = "HardBounce") -> dict:
    return {
        "RecordType": "Bounce",
        "Type": kind,
        "TypeCode": 1,
        "ID": 42,
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Email": email,
        "BouncedAt": "2024-05-01T10:00:00Z",
        "Description": "The server was unable to deliver your message",
        "Details": "smtp;550 5.1.1 user unknown",
    }


def test_a_hard_bounce_marks_the_subscriber_bounced(client):
    subscriber = SubscriberFactory(email="Gone@Example.com")
    response = post_event(client, bounce("gone@example.com"))
    assert response.status_code == 200
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.BOUNCED
    assert subscriber.status_reason.startswith("provider: bounced")


def test_a_soft_bounce_leaves_the_subscriber_on_the_list(client):
    subscriber = SubscriberFactory(email="full.mailbox@example.com")
    response = post_event(client, bounce("full.mailbox@example.com", kind="SoftBounce"))
    assert response.status_code == 200
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.ACTIVE

    post_event(client, bounce("full.mailbox@example.com", kind="HardBounce"))
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.BOUNCED


def test_a_spam_complaint_marks_the_subscriber_complained(client):
    subscriber = SubscriberFactory(email="annoyed@example.com")
    payload = {
        "RecordType": "SpamComplaint",
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "MessageID": "00000000-0000-0000-0000-000000000001",
        "Email": "annoyed@example.com",
        "BouncedAt": "2024-05-01T10:00:00Z",
    }
    assert post_event(client, payload).status_code == 200
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.COMPLAINED


def test_a_provider_unsubscribe_marks_the_subscriber_unsubscribed(client):
    subscriber = SubscriberFactory(email="leaving@example.com")
    payload = {
        "RecordType": "SubscriptionChange",
        "MessageID": "00000000-0000-0000-0000-000000000002",
        "Recipient": "leaving@example.com",
        "ChangedAt": "2024-05-01T10:00:00Z",
        "SuppressSending": True,
        "SuppressionReason": "ManualSuppression",
    }
    assert post_event(client, payload).status_code == 200
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.UNSUBSCRIBED


def test_a_later_bounce_does_not_undo_a_complaint(client):
    subscriber = SubscriberFactory(email="x@example.com", status=Subscriber.Status.COMPLAINED)
    post_event(client, bounce("x@example.com"))
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.COMPLAINED


def test_an_unauthenticated_webhook_changes_nothing(client):
    subscriber = SubscriberFactory(email="safe@example.com")
    response = post_event(client, bounce("safe@example.com"), credentials="hook:wrong")
    assert response.status_code in {400, 401, 403}
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.ACTIVE


def test_events_for_unknown_addresses_are_accepted_and_ignored(client):
    SubscriberFactory(email="someone@example.com")
    assert post_event(client, bounce("stranger@example.com")).status_code == 200
    assert Subscriber.objects.get().status == Subscriber.Status.ACTIVE


# --- Only while the webhook can be authenticated ----------------------------------------

COMPLAINT = {"RecordType": "SpamComplaint", "Email": "paid@example.com", "ID": 7}


@pytest.mark.parametrize(
    ("backend", "anymail"),
    [
        pytest.param("django.core.mail.backends.smtp.EmailBackend", {}, id="smtp"),
        pytest.param(
            "django.core.mail.backends.smtp.EmailBackend",
            {"WEBHOOK_SECRET": WEBHOOK_AUTH},
            id="smtp-with-a-secret",
        ),
        pytest.param(
            "anymail.backends.postmark.EmailBackend",
            {"POSTMARK_SERVER_TOKEN": "test-token"},
            id="postmark-without-a-secret",
        ),
    ],
)
def test_an_unauthenticated_complaint_is_a_404_and_changes_nothing_without_a_webhook_secret(
    client, settings, backend, anymail
):
    settings.EMAIL_BACKEND = backend
    settings.ANYMAIL = anymail
    subscriber = SubscriberFactory(email="paid@example.com")

    response = client.post(WEBHOOK, data=json.dumps(COMPLAINT), content_type="application/json")

    assert response.status_code == 404
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.ACTIVE


def test_with_the_secret_a_complaint_without_credentials_is_refused(client):
    subscriber = SubscriberFactory(email="paid@example.com")
    response = client.post(WEBHOOK, data=json.dumps(COMPLAINT), content_type="application/json")
    assert response.status_code in (400, 401, 403)
    assert post_event(client, COMPLAINT, credentials="hook:wrong").status_code in (400, 401, 403)
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.ACTIVE


def test_only_the_configured_provider_s_webhook_answers(client):
    subscriber = SubscriberFactory(email="paid@example.com")
    auth = base64.b64encode(WEBHOOK_AUTH.encode()).decode()
    response = client.post(
        "/anymail/sendgrid/tracking/",
        data=json.dumps([{"event": "spamreport", "email": "paid@example.com"}]),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Basic {auth}",
    )
    assert response.status_code == 404
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.ACTIVE


def test_a_provider_without_a_webhook_secret_is_a_system_check_warning(settings):
    from django.core import checks

    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "test-token"}
    assert "subscriptions.W010" in [m.id for m in checks.run_checks()]
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "test-token", "WEBHOOK_SECRET": WEBHOOK_AUTH}
    assert "subscriptions.W010" not in [m.id for m in checks.run_checks()]
