"""The Stripe webhook endpoint: verification, the event ledger, ordering, retries."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.db import InterfaceError, OperationalError, connection, connections
from django.utils import timezone

from subscriptions.models import Membership, StripeEvent, Subscriber
from subscriptions.services import access, stripe_events
from subscriptions.tasks import retry_stripe_events
from tests.factories import PlanFactory, SubscriberFactory
from tests.subscriptions.stripe_support import WEBHOOK_URL, signature_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader_with_subscription(stripe_api):
    """A reader with a Stripe customer and an active subscription that we do not know yet."""
    subscriber = SubscriberFactory(email="reader@example.com")
    customer = stripe_api.add_customer(email=subscriber.email)
    Subscriber.objects.filter(pk=subscriber.pk).update(stripe_customer_id=customer["id"])
    price = stripe_api.add_price(unit_amount=800)
    PlanFactory(stripe_price_id=price["id"])
    subscription = stripe_api.add_subscription(customer=customer["id"], price=price["id"])
    return subscriber, subscription


def subscription_event_body(stripe_api, event_type="customer.subscription.created"):
    sub = stripe_api.add_subscription(
        customer=stripe_api.add_customer(email="x@example.com")["id"],
        price=stripe_api.add_price(unit_amount=500)["id"],
    )
    return json.dumps(stripe_api.event(event_type, sub))


def test_a_bad_signature_is_rejected_and_nothing_is_stored(stripe_api, stripe_webhooks):
    body = subscription_event_body(stripe_api)
    response = stripe_webhooks.post(
        body, signature=signature_for(body, secret="whsec_someone_else")
    )
    assert response.status_code == 400
    assert StripeEvent.objects.count() == 0
    assert Membership.objects.count() == 0


def test_a_signature_over_a_different_body_is_rejected(stripe_api, stripe_webhooks):
    body = subscription_event_body(stripe_api)
    tampered = body.replace('"active"', '"trialing"')
    response = stripe_webhooks.post(tampered, signature=signature_for(body))
    assert response.status_code == 400
    assert StripeEvent.objects.count() == 0


def test_a_stale_timestamp_is_rejected(stripe_api, stripe_webhooks):
    body = subscription_event_body(stripe_api)
    ten_minutes_ago = int(time.time()) - 600
    response = stripe_webhooks.post(body, signature=signature_for(body, timestamp=ten_minutes_ago))
    assert response.status_code == 400
    assert "tolerance" in response.json()["error"]
    assert StripeEvent.objects.count() == 0


def test_a_missing_signature_header_is_rejected(stripe_api, stripe_webhooks):
    body = subscription_event_body(stripe_api)
    response = stripe_webhooks.post(body, signature=None)
    assert response.status_code == 400
    assert StripeEvent.objects.count() == 0


def test_a_malformed_body_is_rejected_even_when_signed(stripe_webhooks):
    for body in ('{"id": "evt_1", "object": "event", ', '["not", "an", "event"]'):
        response = stripe_webhooks.post(body, signature=signature_for(body))
        assert response.status_code == 400
    assert StripeEvent.objects.count() == 0


def test_the_webhook_needs_no_csrf_token_and_only_accepts_post(stripe_api, client):
    from django.test import Client

    csrf_client = Client(enforce_csrf_checks=True)
    body = subscription_event_body(stripe_api, event_type="balance.available")
    response = csrf_client.post(
        WEBHOOK_URL,
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signature_for(body),
    )
    assert response.status_code == 200
    assert client.get(WEBHOOK_URL).status_code == 405


def test_an_unknown_event_type_is_stored_and_acknowledged(stripe_api, stripe_webhooks):
    event = stripe_api.event("payout.paid", {"id": "po_1", "object": "payout", "amount": 100})
    response = stripe_webhooks.send(event)
    assert response.status_code == 200
    stored = StripeEvent.objects.get(stripe_id=event["id"])
    assert stored.type == "payout.paid"
    assert stored.payload["data"]["object"]["id"] == "po_1"
    assert stored.processed_at is not None
    assert stored.error == ""


def test_the_same_event_twice_is_applied_once(
    stripe_api, reader_with_subscription, stripe_webhooks
):
    subscriber, subscription = reader_with_subscription
    event = stripe_api.event("customer.subscription.created", subscription)
    first = stripe_webhooks.send(event)
    reads_after_first = len(stripe_api.requests_to("GET", "/v1/subscriptions/"))
    second = stripe_webhooks.send(event)

    assert first.status_code == second.status_code == 200
    assert second.json()["duplicate"] is True
    assert StripeEvent.objects.filter(stripe_id=event["id"]).count() == 1
    assert StripeEvent.objects.get(stripe_id=event["id"]).attempts == 1
    # The duplicate did no work: Stripe was not asked again.
    assert len(stripe_api.requests_to("GET", "/v1/subscriptions/")) == reads_after_first
    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert membership.subscriber == subscriber
    assert membership.status == Membership.Status.ACTIVE


def test_subscription_updated_before_created_converges_to_the_latest_state(
    stripe_api, reader_with_subscription, stripe_webhooks
):
    _subscriber, subscription = reader_with_subscription
    created = stripe_api.event("customer.subscription.created", subscription)
    later = stripe_api.update_subscription(subscription["id"], cancel_at_period_end=True)
    updated = stripe_api.event("customer.subscription.updated", later)

    # Stripe delivers the update first, then the (older) creation.
    stripe_webhooks.send(updated)
    stripe_webhooks.send(created)

    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert membership.status == Membership.Status.ACTIVE
    assert membership.cancel_at_period_end is True  # the older snapshot did not undo it
    assert Membership.objects.count() == 1


def test_without_an_api_key_an_older_snapshot_does_not_overwrite_a_newer_one(
    stripe_api, reader_with_subscription, settings, stripe_webhooks
):
    _subscriber, subscription = reader_with_subscription
    settings.STRIPE_SECRET_KEY = ""  # processing can only compare event times now
    now = int(time.time())
    canceled = dict(subscription, status="canceled", ended_at=now)
    newer = stripe_api.event("customer.subscription.deleted", canceled, created=now)
    older = stripe_api.event("customer.subscription.updated", subscription, created=now - 60)

    stripe_webhooks.send(newer)
    stripe_webhooks.send(older)

    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert membership.status == Membership.Status.CANCELED
    assert StripeEvent.objects.filter(processed_at__isnull=False).count() == 2


def test_a_failed_event_is_recorded_and_retried_with_backoff(
    stripe_api, reader_with_subscription, settings, stripe_webhooks
):
    _subscriber, subscription = reader_with_subscription
    event = stripe_api.event("customer.subscription.created", subscription)
    real_base = settings.STRIPE_API_BASE
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # Stripe unreachable

    response = stripe_webhooks.send(event)

    assert response.status_code == 200  # received; processing failed later
    stored = StripeEvent.objects.get(stripe_id=event["id"])
    assert stored.processed_at is None
    assert stored.attempts == 1
    assert "StripeError" in stored.error
    assert stored.next_attempt_at is not None
    assert stored.next_attempt_at > timezone.now()
    assert not Membership.objects.exists()

    # Not due yet: the sweeper leaves it alone.
    assert retry_stripe_events.delay().get() == 0

    settings.STRIPE_API_BASE = real_base
    StripeEvent.objects.filter(pk=stored.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    assert retry_stripe_events.delay().get() == 1

    stored.refresh_from_db()
    assert stored.processed_at is not None
    assert stored.error == ""
    assert stored.attempts == 2
    assert Membership.objects.get(stripe_subscription_id=subscription["id"]).status == "active"


def test_retry_delays_grow_and_stop_after_the_last_attempt():
    assert (
        stripe_events.retry_delay(1) < stripe_events.retry_delay(2) < stripe_events.retry_delay(5)
    )
    assert stripe_events.retry_delay(30) == timedelta(hours=6)


def test_an_event_that_keeps_failing_stops_being_retried(stripe_api, settings):
    event = StripeEvent.objects.create(
        stripe_id="evt_always_fails",
        type="customer.subscription.updated",
        created=timezone.now(),
        payload={"data": {"object": {"id": "sub_does_not_exist", "object": "subscription"}}},
        next_attempt_at=timezone.now(),
    )
    for _ in range(stripe_events.MAX_ATTEMPTS + 2):
        StripeEvent.objects.filter(pk=event.pk, next_attempt_at__isnull=False).update(
            next_attempt_at=timezone.now() - timedelta(seconds=1)
        )
        retry_stripe_events.delay()
    event.refresh_from_db()
    assert event.attempts == stripe_events.MAX_ATTEMPTS
    assert event.next_attempt_at is None
    assert "No such subscription" in event.error
    assert event.processed_at is None


def test_acceptance_only_stores_the_event_and_the_drain_applies_it(
    client, stripe_api, reader_with_subscription, django_capture_on_commit_callbacks
):
    _subscriber, subscription = reader_with_subscription
    event = stripe_api.event("customer.subscription.created", subscription)
    body = json.dumps(event)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            WEBHOOK_URL,
            data=body,
            content_type="application/json",
            HTTP_STRIPE_SIGNATURE=signature_for(body),
        )
    assert response.status_code == 200
    assert callbacks == []  # nothing queued in the request: no broker round trip
    stored = StripeEvent.objects.get(stripe_id=event["id"])
    assert stored.processed_at is None
    assert stored.object_id == subscription["id"]
    assert stored.next_attempt_at is not None and stored.next_attempt_at <= timezone.now()

    assert retry_stripe_events.delay().get() == 1
    stored.refresh_from_db()
    assert stored.processed_at is not None
    assert Membership.objects.filter(stripe_subscription_id=subscription["id"]).exists()
    assert retry_stripe_events.delay().get() == 0


def test_a_subscription_made_in_the_dashboard_is_matched_by_customer_email(
    stripe_api, stripe_webhooks
):
    known = SubscriberFactory(email="Known.Reader@example.com")
    customer = stripe_api.add_customer(email="known.reader@example.com")
    price = stripe_api.add_price(unit_amount=8000, interval="year")
    subscription = stripe_api.add_subscription(customer=customer["id"], price=price["id"])

    stripe_webhooks.deliver("customer.subscription.created", subscription)

    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert membership.subscriber == known
    known.refresh_from_db()
    assert known.stripe_customer_id == customer["id"]


def test_a_payment_from_an_unknown_address_creates_an_active_subscriber(
    stripe_api, stripe_webhooks
):
    customer = stripe_api.add_customer(email="new.payer@example.com", name="New Payer")
    price = stripe_api.add_price(unit_amount=800)
    subscription = stripe_api.add_subscription(customer=customer["id"], price=price["id"])

    stripe_webhooks.deliver("customer.subscription.created", subscription)

    subscriber = Subscriber.objects.get(email="new.payer@example.com")
    assert subscriber.status == Subscriber.Status.ACTIVE
    assert subscriber.stripe_customer_id == customer["id"]
    assert subscriber.memberships.get().status == Membership.Status.ACTIVE
    assert mail.outbox == []


def test_a_signed_event_with_a_nul_character_is_stored_without_it(stripe_api, stripe_webhooks):
    event = stripe_api.event("customer.updated", {"id": "cus_1", "name": "Bad\u0000Name"})
    response = stripe_webhooks.send(event)
    assert response.status_code == 200
    stored = StripeEvent.objects.get(stripe_id=event["id"])
    assert stored.payload["data"]["object"]["name"] == "BadName"


def paid_through_a_payment_link(stripe_api, price, *, email: str, **params):
    """A Payment Link's Checkout, paid: no customer and none of our metadata, only what
    the link's URL adds (`params`)."""
    from subscriptions import stripe_client

    session = stripe_client.create_checkout_session(
        params={
            "mode": "subscription",
            "line_items": [{"price": price["id"], "quantity": 1}],
            "success_url": "https://example.com/thanks",
            **params,
        },
        idempotency_key=f"payment-link-{email}",
    )
    return stripe_api.complete_checkout(session["id"], email=email)


def test_a_payment_link_checkout_is_matched_to_the_reader_by_email(stripe_api, stripe_webhooks):
    reader = SubscriberFactory(email="linked@example.com", status=Subscriber.Status.PENDING)
    price = stripe_api.add_price(unit_amount=800)
    plan = PlanFactory(stripe_price_id=price["id"])
    completed = paid_through_a_payment_link(stripe_api, price, email="LINKED@example.com")

    stripe_webhooks.deliver("checkout.session.completed", completed)

    reader.refresh_from_db()
    assert reader.status == Subscriber.Status.ACTIVE
    assert reader.stripe_customer_id == completed["customer"]
    membership = reader.memberships.get()
    assert membership.plan == plan
    assert membership.stripe_subscription_id == completed["subscription"]


def test_a_payment_link_naming_another_reader_does_not_touch_their_account(
    stripe_api, stripe_webhooks
):
    victim = SubscriberFactory(email="victim@example.com")
    price = stripe_api.add_price(unit_amount=800)
    PlanFactory(stripe_price_id=price["id"])
    # Anyone can append ?client_reference_id=<id> to a Payment Link's URL.
    completed = paid_through_a_payment_link(
        stripe_api, price, email="payer@example.com", client_reference_id=str(victim.pk)
    )

    stripe_webhooks.deliver("checkout.session.completed", completed)

    victim.refresh_from_db()
    assert victim.stripe_customer_id is None
    assert not victim.memberships.exists()
    payer = Subscriber.objects.get(email="payer@example.com")
    assert payer.stripe_customer_id == completed["customer"]
    assert payer.memberships.get().stripe_subscription_id == completed["subscription"]


def test_a_late_update_from_the_same_second_does_not_bring_a_deleted_subscription_back(
    stripe_api, reader_with_subscription, settings, stripe_webhooks
):
    subscriber, subscription = reader_with_subscription
    settings.STRIPE_SECRET_KEY = ""  # only the snapshots and their (whole-second) times
    now = int(time.time())
    deleted = stripe_api.event(
        "customer.subscription.deleted", dict(subscription, status="canceled"), created=now
    )
    late = stripe_api.event("customer.subscription.updated", subscription, created=now)

    stripe_webhooks.send(deleted)
    stripe_webhooks.send(late)

    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert membership.status == Membership.Status.CANCELED
    assert membership.canceled_at is not None
    assert not access.subscriber_is_paid(subscriber=subscriber)


def test_without_an_api_key_a_change_from_the_same_second_applies_and_an_older_one_does_not(
    stripe_api, reader_with_subscription, settings, stripe_webhooks
):
    """Snapshots carry whole-second times: a change made the second the subscription
    began still reaches the membership, while one from a second before it is stale."""
    subscriber, subscription = reader_with_subscription
    settings.STRIPE_SECRET_KEY = ""
    now = int(time.time())
    ending = dict(subscription, cancel_at_period_end=True)

    stripe_webhooks.send(
        stripe_api.event("customer.subscription.created", subscription, created=now)
    )
    stripe_webhooks.send(stripe_api.event("customer.subscription.updated", ending, created=now))
    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert (membership.subscriber, membership.cancel_at_period_end) == (subscriber, True)

    stale = dict(subscription, cancel_at_period_end=False)
    stripe_webhooks.send(stripe_api.event("customer.subscription.updated", stale, created=now - 1))
    membership.refresh_from_db()
    assert membership.cancel_at_period_end is True
    assert StripeEvent.objects.filter(processed_at__isnull=True).count() == 0


def test_an_unpaid_subscription_from_an_unknown_address_makes_no_reader_until_it_is_paid(
    stripe_api, stripe_webhooks
):
    customer = stripe_api.add_customer(email="stranger@example.com")
    price = stripe_api.add_price(unit_amount=800)
    subscription = stripe_api.add_subscription(
        customer=customer["id"], price=price["id"], status="incomplete"
    )

    stripe_webhooks.deliver("customer.subscription.created", subscription)
    assert not Subscriber.objects.filter(email="stranger@example.com").exists()
    assert not Membership.objects.exists()

    paid = stripe_api.update_subscription(subscription["id"], status="active")
    stripe_webhooks.deliver("customer.subscription.updated", paid)
    reader = Subscriber.objects.get(email="stranger@example.com")
    assert reader.status == Subscriber.Status.ACTIVE
    assert reader.memberships.get().status == Membership.Status.ACTIVE
    assert StripeEvent.objects.filter(processed_at__isnull=True).count() == 0


def test_a_delivery_is_answered_before_the_session_auth_csrf_and_messages_middleware(
    stripe_api, stripe_webhooks
):
    body = subscription_event_body(stripe_api)

    response = stripe_webhooks.post(body, signature=signature_for(body))

    assert response.status_code == 200
    assert StripeEvent.objects.count() == 1
    request = response.wsgi_request
    assert not hasattr(request, "session")
    assert not hasattr(request, "user")
    assert not hasattr(request, "_messages")
    assert "CSRF_COOKIE" not in request.META
    assert not response.cookies


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
@pytest.mark.parametrize("path", [WEBHOOK_URL, WEBHOOK_URL.rstrip("/")])
def test_a_delivery_with_or_without_the_trailing_slash_is_answered_by_the_webhook(
    stripe_api, stripe_webhooks, settings, path, debug
):
    # Stripe follows no redirect: APPEND_SLASH's 301 (a RuntimeError with DEBUG on, for
    # a POST) would lose every delivery to an endpoint configured without the slash.
    settings.DEBUG = debug
    body = subscription_event_body(stripe_api)

    response = stripe_webhooks.client.post(
        path, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=signature_for(body)
    )

    assert response.status_code == 200
    assert StripeEvent.objects.count() == 1
    assert not hasattr(response.wsgi_request, "session")  # answered before the stack


def test_a_delivery_to_a_host_not_allowed_is_refused(stripe_api, stripe_webhooks):
    body = subscription_event_body(stripe_api)

    response = stripe_webhooks.client.post(
        WEBHOOK_URL,
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signature_for(body),
        HTTP_HOST="evil.example",
    )

    assert response.status_code == 400
    assert StripeEvent.objects.count() == 0


# --- A kept connection: the INSERT is its own health check ---------------------------------


def _a_new_request_on_the_kept_connection() -> None:
    """What request_started does (the test client leaves it out): the connection kept
    from the last request is due its health check (CONN_HEALTH_CHECKS)."""
    connection.ensure_connection()
    connection.close_if_unusable_or_obsolete()
    assert connection.connection is not None


def _deliver(client, body: str):
    return client.post(
        WEBHOOK_URL,
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=signature_for(body),
    )


@pytest.mark.django_db(transaction=True)
def test_a_delivery_on_a_kept_connection_sends_no_health_check_before_its_insert(
    stripe_api, client, monkeypatch
):
    checks: list[str] = []
    is_usable = connection.is_usable
    monkeypatch.setattr(connection, "is_usable", lambda: checks.append("SELECT 1") or is_usable())
    bodies = [subscription_event_body(stripe_api) for _ in range(3)]

    for body in [*bodies, bodies[0]]:
        _a_new_request_on_the_kept_connection()
        assert _deliver(client, body).status_code == 200

    assert checks == []
    assert StripeEvent.objects.count() == 3


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="a SQLite file has no connection to lose"
)
@pytest.mark.django_db(transaction=True)
def test_a_kept_connection_the_database_closed_is_replaced_and_the_delivery_stored(
    stripe_api, client
):
    first, second = subscription_event_body(stripe_api), subscription_event_body(stripe_api)
    _a_new_request_on_the_kept_connection()
    assert _deliver(client, first).status_code == 200
    _terminate(connection.connection.info.backend_pid)

    _a_new_request_on_the_kept_connection()
    response = _deliver(client, second)

    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False}
    assert sorted(StripeEvent.objects.values_list("stripe_id", flat=True)) == sorted(
        json.loads(body)["id"] for body in (first, second)
    )


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="a SQLite file has no connection to lose"
)
@pytest.mark.django_db(transaction=True)
def test_without_health_checks_a_kept_connection_the_database_closed_fails_as_in_django(
    stripe_api, client
):
    """CONN_HEALTH_CHECKS off: the INSERT is not retried on a new connection (Django would
    not have checked the connection either); the error reaches the view and Stripe retries."""
    first, second = subscription_event_body(stripe_api), subscription_event_body(stripe_api)
    _a_new_request_on_the_kept_connection()
    assert _deliver(client, first).status_code == 200
    connection.health_check_enabled = False  # a new connection reads the setting again
    _terminate(connection.connection.info.backend_pid)

    _a_new_request_on_the_kept_connection()
    with pytest.raises((InterfaceError, OperationalError)):
        _deliver(client, second)

    connection.close()
    assert list(StripeEvent.objects.values_list("stripe_id", flat=True)) == [
        json.loads(first)["id"]
    ]


def _terminate(backend_pid: int) -> None:
    """The database ends that connection (as a restart or an idle timeout would)."""
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend_pid])
            for _ in range(100):
                cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [backend_pid])
                if cursor.fetchone() is None:
                    return
                time.sleep(0.02)
        raise AssertionError("the connection was not terminated")
    finally:
        other.close()


def test_each_refused_delivery_is_answered_with_what_was_wrong_with_it(stripe_webhooks):
    """Stripe's dashboard shows the answer's body: each kind of refusal says its own
    reason, in words, and stores nothing."""
    event = '{"id": "evt_1", "object": "event", "type": "t", "data": {}, "created": %s}'
    deliveries = {
        "truncated": ('{"id": "evt_1", ', "Malformed JSON."),
        "a lone surrogate": (
            event % '1900000000, "name": "\\ud800"',
            "Malformed JSON: an unpaired surrogate escape.",
        ),
        "no event": ('["not", "an", "event"]', "Not a Stripe event."),
        "out of range": (
            event % "1000000000000",
            "Not a Stripe event: its creation time is out of range.",
        ),
    }
    answers = {
        name: stripe_webhooks.post(body, signature=signature_for(body)).json()
        for name, (body, _reason) in deliveries.items()
    }
    assert answers == {name: {"error": reason} for name, (_body, reason) in deliveries.items()}
    unsigned = stripe_webhooks.post(deliveries["no event"][0], signature="t=1,v1=00").json()
    assert unsigned["error"].startswith("Invalid signature: ")
    assert len(unsigned["error"]) > len("Invalid signature: ")
    assert StripeEvent.objects.count() == 0
