"""The rules that must hold when two workers do the same thing at the same moment, each
on its own PostgreSQL connection (threads, each with Django's connection of its own),
not only when they take turns."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import connection, connections
from django.utils import timezone

from newsletter.models import Article, Delivery, EmailSend, TelegramPost
from newsletter.services.publishing import publish_article
from newsletter.services.sending import claim_chunk
from subscriptions import tasks as subscription_tasks
from subscriptions.models import Membership, StripeEvent, Subscriber
from tests.factories import ArticleFactory, MembershipFactory, PlanFactory, SubscriberFactory

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 3


def at_once(*work: Callable[[], Any]) -> list[Any]:
    """Run each callable in a thread of its own, released together; their results."""
    assert connection.vendor == "postgresql", "these tests need real row locks"
    start = threading.Barrier(len(work))
    results: list[Any] = [None] * len(work)
    errors: list[BaseException] = []

    def run(index: int, job: Callable[[], Any]) -> None:
        try:
            start.wait(timeout=10)
            results[index] = job()
        except BaseException as exc:  # noqa: BLE001 (raised below, in the test's thread)
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n, job)) for n, job in enumerate(work)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a worker hung"
    if errors:
        raise errors[0]
    return results


def wait_until_blocked_or_done(thread: threading.Thread, *, timeout: float = 15) -> None:
    """Until `thread` waits on a row lock held by another connection, or has finished.

    A fixed pause is not enough on a busy machine: the thread may not have reached the
    lock yet, and the test would then check the order it wanted to force by luck."""
    import time

    deadline = time.monotonic() + timeout
    while thread.is_alive() and time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
        time.sleep(0.02)
    assert not thread.is_alive(), "the thread neither finished nor waited on a lock"


# --- Stripe: the on-commit task and the sweeper on the same event ------------------------


def test_a_stripe_event_the_task_and_the_sweeper_process_at_once_is_applied_once(stripe_api):
    price = stripe_api.add_price(unit_amount=800)
    PlanFactory(stripe_price_id=price["id"])
    for n in range(ROUNDS):
        customer = stripe_api.add_customer(email=f"racer{n}@example.com")
        subscription = stripe_api.add_subscription(customer=customer["id"], price=price["id"])
        event = stripe_api.event("customer.subscription.created", subscription)
        stored = StripeEvent.objects.create(
            stripe_id=event["id"],
            type=event["type"],
            created=timezone.now(),
            payload=event,
            # Due for the sweeper: the broker was slow to hand the task over.
            next_attempt_at=timezone.now() - timedelta(seconds=1),
        )
        reads_before = len(stripe_api.requests_to("GET", f"/v1/subscriptions/{subscription['id']}"))

        task, sweeper = at_once(
            lambda pk=stored.pk: subscription_tasks.process_stripe_event(pk),
            lambda: subscription_tasks.retry_stripe_events(),
        )

        assert task is True
        assert sweeper in (0, 1)  # the sweeper may find it locked, or already done
        stored.refresh_from_db()
        assert stored.processed_at is not None
        assert stored.attempts == 1
        assert stored.error == ""
        reads = stripe_api.requests_to("GET", f"/v1/subscriptions/{subscription['id']}")
        assert len(reads) - reads_before == 1, "the event was applied twice"
        reader = Subscriber.objects.get(email=f"racer{n}@example.com")
        assert reader.memberships.count() == 1


def test_two_drainers_at_once_attempt_each_stripe_event_once(stripe_api):
    """Two workers polling the outbox at the same moment (an overlapping poll, a second
    worker): each due event is attempted by one of them, once, and Stripe is asked once
    per event; an event not due yet (a retry waiting out its backoff) is left alone."""
    from subscriptions.services import stripe_outbox

    price = stripe_api.add_price(unit_amount=800)
    PlanFactory(stripe_price_id=price["id"])
    for n in range(ROUNDS):
        due, subscriptions = [], []
        for reader in range(3):
            customer = stripe_api.add_customer(email=f"drained{n}.{reader}@example.com")
            subscription = stripe_api.add_subscription(customer=customer["id"], price=price["id"])
            subscriptions.append(subscription)
            for kind in ("created", "updated"):
                event = stripe_api.event(f"customer.subscription.{kind}", subscription)
                due.append(
                    StripeEvent.objects.create(
                        stripe_id=event["id"],
                        type=event["type"],
                        created=timezone.now(),
                        payload=event,
                        object_id=subscription["id"],
                        next_attempt_at=timezone.now() - timedelta(seconds=1),
                    )
                )
        later = stripe_api.event("customer.subscription.created", subscriptions[0])
        not_yet = StripeEvent.objects.create(
            stripe_id=later["id"],
            type=later["type"],
            created=timezone.now(),
            payload=later,
            object_id=subscriptions[0]["id"],
            next_attempt_at=timezone.now() + timedelta(hours=1),
        )
        reads_before = {
            s["id"]: len(stripe_api.requests_to("GET", f"/v1/subscriptions/{s['id']}"))
            for s in subscriptions
        }

        first, second = at_once(stripe_outbox.drain, stripe_outbox.drain)
        # A drainer leaves an object's later event when its earlier one is locked by
        # the other drainer (they lock rows as their scans meet them): the next poll
        # takes what the two left, none of it attempted yet.
        next_poll = stripe_outbox.drain()

        attempted = (first, second, next_poll)
        assert sum(attempted) == len(due), f"round {n}: {attempted} of {len(due)} attempted"
        for event in due:
            event.refresh_from_db()
            assert (event.processed_at is not None, event.attempts) == (True, 1)
        for s in subscriptions:
            reads = len(stripe_api.requests_to("GET", f"/v1/subscriptions/{s['id']}"))
            assert reads - reads_before[s["id"]] == 2, "one read per event"
            assert Membership.objects.filter(stripe_subscription_id=s["id"]).count() == 1
        not_yet.refresh_from_db()
        assert (not_yet.processed_at, not_yet.attempts) == (None, 0)


def test_two_events_about_one_subscription_at_once_leave_the_newer_state_in_place(stripe_api):
    """Each worker re-reads the subscription from Stripe. Locked on the subscription, the
    second reads only after the first has written, so an older answer that was slow to
    arrive cannot overwrite a newer one."""
    price = stripe_api.add_price(unit_amount=800)
    PlanFactory(stripe_price_id=price["id"])
    reader = SubscriberFactory(email="reader@example.com")
    customer = stripe_api.add_customer(email=reader.email)
    subscription = stripe_api.add_subscription(customer=customer["id"], price=price["id"])
    created, updated = (
        StripeEvent.objects.create(
            stripe_id=event["id"], type=event["type"], created=timezone.now(), payload=event
        )
        for event in (
            stripe_api.event("customer.subscription.created", subscription),
            stripe_api.event("customer.subscription.updated", subscription),
        )
    )
    slow = stripe_api.hold_next("GET", f"/v1/subscriptions/{subscription['id']}")
    results: dict[str, Any] = {}

    def process(name: str, pk: int) -> threading.Thread:
        def run() -> None:
            try:
                results[name] = subscription_tasks.process_stripe_event(pk)
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    first = process("created", created.pk)
    assert slow.arrived.wait(timeout=10)  # its answer (renewing) is on its way
    stripe_api.update_subscription(subscription["id"], cancel_at_period_end=True)
    second = process("updated", updated.pk)
    wait_until_blocked_or_done(second)  # with the lock it waits for the first
    slow.release.set()
    first.join(timeout=30)
    second.join(timeout=30)

    assert results == {"created": True, "updated": True}
    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert membership.cancel_at_period_end is True
    assert not StripeEvent.objects.filter(processed_at__isnull=True).exists()


# --- Sending: two workers claiming from one send ------------------------------------------


def claimed_ids(claim: Any) -> set[int]:
    """The deliveries one `claim_chunk` call handed its worker."""
    _claim, claimed, _skipped = claim
    return {delivery.pk for delivery in claimed}


def test_two_workers_claiming_at_once_never_get_the_same_delivery():
    readers = Subscriber.objects.bulk_create(
        Subscriber(email=f"reader{n}@example.com", status=Subscriber.Status.ACTIVE)
        for n in range(120)
    )
    for n in range(ROUNDS):
        article = ArticleFactory(status=Article.Status.PUBLISHED, published_at=timezone.now())
        send = EmailSend.objects.create(
            article=article,
            audience=Article.EmailAudience.EVERYONE,
            status=EmailSend.Status.SENDING,
            recipient_count=len(readers),
        )
        Delivery.objects.bulk_create(Delivery(send=send, subscriber=r) for r in readers)

        first, second = at_once(
            lambda pk=send.pk: claim_chunk(email_send_id=pk, size=80),
            lambda pk=send.pk: claim_chunk(email_send_id=pk, size=80),
        )

        first_ids, second_ids = claimed_ids(first), claimed_ids(second)
        assert first_ids.isdisjoint(second_ids), f"round {n}: a delivery was claimed twice"
        assert len(first_ids) + len(second_ids) == len(readers)
        assert first_ids | second_ids == set(send.deliveries.values_list("pk", flat=True))
        assert sorted([len(first_ids), len(second_ids)]) == [40, 80]
        assert send.deliveries.filter(status=Delivery.Status.CLAIMED).count() == len(readers)
        assert set(send.deliveries.values_list("attempts", flat=True)) == {1}


def test_a_worker_claiming_while_another_claim_is_in_progress_passes_its_rows_by():
    """Rows another worker's claim has locked and not yet committed are passed by (SKIP
    LOCKED): the second worker takes the next ones at once instead of waiting."""
    from django.db import transaction

    readers = Subscriber.objects.bulk_create(
        Subscriber(email=f"patient{n}@example.com", status=Subscriber.Status.ACTIVE)
        for n in range(10)
    )
    article = ArticleFactory(status=Article.Status.PUBLISHED, published_at=timezone.now())
    send = EmailSend.objects.create(
        article=article, audience=Article.EmailAudience.EVERYONE, status=EmailSend.Status.SENDING
    )
    Delivery.objects.bulk_create(Delivery(send=send, subscriber=r) for r in readers)
    ids = list(send.deliveries.order_by("id").values_list("pk", flat=True))
    held, release = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def first_worker() -> None:
        # Where a claim stands between its SELECT ... FOR UPDATE and its commit.
        try:
            with transaction.atomic():
                list(Delivery.objects.filter(pk__in=ids[:4]).select_for_update())
                held.set()
                release.wait(timeout=60)
        finally:
            connections.close_all()

    def second_worker() -> None:
        try:
            results["second"] = claim_chunk(email_send_id=send.pk, size=4)
        finally:
            connections.close_all()

    first = threading.Thread(target=first_worker)
    first.start()
    try:
        assert held.wait(timeout=30), "the first worker never locked its rows"
        second = threading.Thread(target=second_worker)
        second.start()
        wait_until_blocked_or_done(second)
        blocked = second.is_alive()
    finally:
        release.set()
        first.join(timeout=60)
    second.join(timeout=60)

    assert not blocked, "the second worker waited for the first one's commit"
    assert claimed_ids(results["second"]) == set(ids[4:8])
    claimed = send.deliveries.filter(status=Delivery.Status.CLAIMED)
    assert set(claimed.values_list("pk", flat=True)) == set(ids[4:8])


def test_two_workers_sending_one_send_at_once_email_each_reader_once(settings):
    """Not only the claims: the whole chunk task, handing over to a real SMTP server with
    each worker's sent-marks committed by its own helper connection."""
    from newsletter.services.sending import send_chunk
    from tests.fakes.smtp import FakeSMTPServer

    readers = Subscriber.objects.bulk_create(
        Subscriber(email=f"sender{n}@example.com", status=Subscriber.Status.ACTIVE)
        for n in range(90)
    )
    left_alone = ArticleFactory(status=Article.Status.PUBLISHED, published_at=timezone.now())
    other = EmailSend.objects.create(
        article=left_alone, audience=Article.EmailAudience.EVERYONE, status=EmailSend.Status.SENDING
    )
    Delivery.objects.bulk_create(Delivery(send=other, subscriber=r) for r in readers[:5])
    with FakeSMTPServer() as server:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = server.host, server.port
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        for n in range(ROUNDS):
            server.clear()
            article = ArticleFactory(status=Article.Status.PUBLISHED, published_at=timezone.now())
            send = EmailSend.objects.create(
                article=article,
                audience=Article.EmailAudience.EVERYONE,
                status=EmailSend.Status.SENDING,
                recipient_count=len(readers),
            )
            Delivery.objects.bulk_create(Delivery(send=send, subscriber=r) for r in readers)

            first, second = at_once(
                lambda pk=send.pk: send_chunk(email_send_id=pk, size=60),
                lambda pk=send.pk: send_chunk(email_send_id=pk, size=60),
            )

            assert first.sent + second.sent == len(readers), f"round {n}"
            # Both scan the same rows with SKIP LOCKED: how they split them depends on
            # how their scans interleave, but together they take each once.
            assert first.claimed + second.claimed == len(readers), f"round {n}"
            assert max(first.claimed, second.claimed) <= 60
            received = server.recipients()
            assert sorted(received) == sorted(r.email for r in readers), "a reader got two"
            assert set(send.deliveries.values_list("status", flat=True)) == {"sent"}
            assert set(send.deliveries.values_list("attempts", flat=True)) == {1}
            send.refresh_from_db()
            assert send.sent_count == len(readers)
    assert set(other.deliveries.values_list("status", flat=True)) == {"pending"}


# --- Publishing: two editors (or the scheduler and an editor) at once ---------------------


def test_an_article_published_twice_at_once_is_sent_and_posted_once(telegram_api):
    for n in range(3):
        SubscriberFactory(email=f"listener{n}@example.com")
    for n in range(ROUNDS):
        mail.outbox.clear()
        article = ArticleFactory(title=f"Breaking, take {n}", post_to_telegram=True)

        results = at_once(
            lambda pk=article.pk: publish_article(article=Article.objects.get(pk=pk)),
            lambda pk=article.pk: publish_article(article=Article.objects.get(pk=pk)),
        )

        assert sorted(result.newly_published for result in results) == [False, True]
        assert EmailSend.objects.filter(article=article).count() == 1
        send = EmailSend.objects.get(article=article)
        assert send.deliveries.count() == 3
        assert send.deliveries.filter(status=Delivery.Status.SENT).count() == 3
        assert sorted(message.to[0] for message in mail.outbox) == [
            "listener0@example.com",
            "listener1@example.com",
            "listener2@example.com",
        ]
        assert TelegramPost.objects.filter(article=article).count() == 1
        posted = [
            call for call in telegram_api.calls() if f"Breaking, take {n}" in str(call.params)
        ]
        assert len(posted) == 1


# --- Membership reminders: two daily runs overlapping -------------------------------------


def test_two_expiry_runs_at_once_send_each_reminder_once():
    from subscriptions.services.memberships import expire_memberships

    for n in range(ROUNDS):
        mail.outbox.clear()
        for m in range(6):
            MembershipFactory(
                subscriber=SubscriberFactory(email=f"round{n}.reader{m}@example.com"),
                kind=Membership.Kind.COMP,
                plan=None,
                stripe_subscription_id=None,
                expires_at=timezone.now() + timedelta(days=3),
            )

        first, second = at_once(expire_memberships, expire_memberships)

        assert first["reminded"] + second["reminded"] == 6
        recipients = sorted(message.to[0] for message in mail.outbox)
        assert recipients == sorted(f"round{n}.reader{m}@example.com" for m in range(6))


# --- Signups: the same new address twice at the same moment -------------------------------


def test_the_same_new_address_signing_up_twice_at_once_makes_one_pending_reader():
    from subscriptions.services.signup import subscribe

    for n in range(ROUNDS):
        email = f"eager{n}@example.com"
        first, second = at_once(
            lambda email=email: subscribe(email=email, ip=None, source="/"),
            lambda email=email: subscribe(email=email.upper(), ip=None, source="/"),
        )
        reader = Subscriber.objects.get(email=email)
        assert first.subscriber.pk == second.subscriber.pk == reader.pk
        assert reader.status == Subscriber.Status.PENDING
        assert sorted([first.confirmation_sent, second.confirmation_sent]) == [False, True]


def test_two_events_about_one_donation_checkout_at_once_record_and_thank_it_once(settings):
    from subscriptions.models import Donation

    settings.STRIPE_SECRET_KEY = ""  # the snapshots are applied as they are
    for n in range(ROUNDS):
        mail.outbox.clear()
        session = {
            "id": f"cs_coffee_{n}",
            "object": "checkout.session",
            "mode": "payment",
            "status": "complete",
            "payment_status": "paid",
            "amount_total": 300,
            "currency": "usd",
            "customer": None,
            "customer_details": {"email": f"coffee{n}@example.com"},
            "payment_intent": f"pi_coffee_{n}",
            "metadata": {},
        }
        events = [
            StripeEvent.objects.create(
                stripe_id=f"evt_{kind}_{n}",
                type=f"checkout.session.{kind}",
                created=timezone.now(),
                payload={"object": "event", "data": {"object": session}},
            )
            for kind in ("completed", "async_payment_succeeded")
        ]

        results = at_once(
            *(lambda pk=event.pk: subscription_tasks.process_stripe_event(pk) for event in events)
        )

        assert results == [True, True]
        assert Donation.objects.filter(stripe_checkout_session_id=session["id"]).count() == 1
        assert [message.to for message in mail.outbox] == [[f"coffee{n}@example.com"]]


def test_a_failure_is_on_record_before_a_waiting_worker_applies_the_event(stripe_api):
    """The task fails (the customer had no address yet) while the sweeper waits on the
    event's row lock; the sweeper then succeeds. The failure is recorded before the lock
    is let go, so it cannot land on the applied event afterwards: two attempts counted,
    no error left, nothing due again."""
    price = stripe_api.add_price(unit_amount=800)
    PlanFactory(stripe_price_id=price["id"])
    customer = stripe_api.add_customer(email="")
    subscription = stripe_api.add_subscription(customer=customer["id"], price=price["id"])
    event = stripe_api.event("customer.subscription.created", subscription)
    stored = StripeEvent.objects.create(
        stripe_id=event["id"], type=event["type"], created=timezone.now(), payload=event
    )
    slow = stripe_api.hold_next("GET", f"/v1/customers/{customer['id']}")
    results: dict[str, Any] = {}

    def process(name: str) -> threading.Thread:
        def run() -> None:
            try:
                results[name] = subscription_tasks.process_stripe_event(stored.pk)
            finally:
                connections.close_all()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    task = process("task")
    assert slow.arrived.wait(timeout=10)  # its answer: a customer without an email
    stripe_api._store.get("customer", customer["id"])["email"] = "late@example.com"
    sweeper = process("sweeper")
    wait_until_blocked_or_done(sweeper)  # on the event's row lock
    slow.release.set()
    task.join(timeout=30)
    sweeper.join(timeout=30)

    assert results == {"task": False, "sweeper": True}
    stored.refresh_from_db()
    assert stored.processed_at is not None
    assert stored.attempts == 2
    assert stored.error == ""
    assert stored.next_attempt_at is None
    assert Subscriber.objects.get(email="late@example.com").memberships.count() == 1


def test_two_subscriptions_of_one_new_payer_applied_at_once_make_one_reader(stripe_api):
    price = stripe_api.add_price(unit_amount=800)
    PlanFactory(stripe_price_id=price["id"])
    for n in range(ROUNDS):
        email = f"twice.paying{n}@example.com"
        customer = stripe_api.add_customer(email=email)
        events = []
        for _ in range(2):  # e.g. a membership and monthly support bought side by side
            subscription = stripe_api.add_subscription(customer=customer["id"], price=price["id"])
            event = stripe_api.event("customer.subscription.created", subscription)
            events.append(
                StripeEvent.objects.create(
                    stripe_id=event["id"], type=event["type"], created=timezone.now(), payload=event
                )
            )

        results = at_once(
            *(lambda pk=event.pk: subscription_tasks.process_stripe_event(pk) for event in events)
        )

        assert results == [True, True]
        reader = Subscriber.objects.get(email=email)
        assert reader.memberships.count() == 2
