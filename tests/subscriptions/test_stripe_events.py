"""What each Stripe event does, what a delivery must look like to be stored, and the
"applied once" rule seen from the processing side."""

from __future__ import annotations

import json

import pytest
from django.core import mail
from django.db import OperationalError, connection
from django.utils import timezone

from subscriptions.models import Membership, Offer, StripeEvent, Subscriber
from subscriptions.services import access, stripe_events
from tests.factories import MembershipFactory, PlanFactory, SubscriberFactory
from tests.subscriptions.stripe_support import signature_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def plan(stripe_api):
    price = stripe_api.add_price(unit_amount=1250, currency="eur")
    return PlanFactory(stripe_price_id=price["id"], amount=1250)


@pytest.fixture
def reader(stripe_api):
    """A known reader with a Stripe customer, next to another reader who must stay put."""
    SubscriberFactory(email="bystander@example.com")
    subscriber = SubscriberFactory(email="reader@example.com")
    customer = stripe_api.add_customer(email=subscriber.email)
    Subscriber.objects.filter(pk=subscriber.pk).update(stripe_customer_id=customer["id"])
    subscriber.refresh_from_db()
    return subscriber


def subscribe(stripe_api, reader, plan, **options):
    return stripe_api.add_subscription(
        customer=reader.stripe_customer_id, price=plan.stripe_price_id, **options
    )


def stored(stripe_api, event_type, obj) -> StripeEvent:
    """An event received (signature checked, row stored) but not processed yet."""
    body = json.dumps(stripe_api.event(event_type, obj)).encode()
    received = stripe_events.receive_webhook(
        payload=body, signature_header=signature_for(body.decode())
    )
    assert received.created
    return received.event


# --- Receiving: only a well-formed Stripe event is stored ---------------------------------


def good_event() -> dict:
    return {
        "id": "evt_well_formed",
        "object": "event",
        "type": "customer.subscription.updated",
        "created": 1_700_000_000,
        "livemode": False,
        "data": {"object": {"id": "sub_1", "object": "subscription"}},
    }


@pytest.mark.parametrize(
    "broken",
    [
        {"object": "list"},
        {"object": None},
        {"id": 42},
        {"id": None},
        {"type": ["customer.subscription.updated"]},
        {"type": None},
        {"data": "sub_1"},
        {"data": None},
        {"created": "1700000000"},
        {"created": None},
    ],
    ids=lambda broken: f"{next(iter(broken))}={next(iter(broken.values()))!r}",
)
def test_a_signed_body_that_is_not_a_stripe_event_is_refused_and_not_stored(stripe_api, broken):
    event = {**good_event(), **broken}
    body = json.dumps(event)
    with pytest.raises(stripe_events.WebhookRejected, match="Not a Stripe event"):
        stripe_events.receive_webhook(payload=body.encode(), signature_header=signature_for(body))
    assert not StripeEvent.objects.exists()


@pytest.mark.parametrize("missing", ["object", "id", "type", "data", "created"])
def test_a_signed_event_missing_a_field_is_refused(stripe_api, missing):
    event = good_event()
    del event[missing]
    body = json.dumps(event)
    with pytest.raises(stripe_events.WebhookRejected):
        stripe_events.receive_webhook(payload=body.encode(), signature_header=signature_for(body))
    assert not StripeEvent.objects.exists()


def test_a_well_formed_event_is_stored_with_its_fields_and_due_for_the_safety_net(stripe_api):
    body = json.dumps({**good_event(), "livemode": True})
    before = timezone.now()
    received = stripe_events.receive_webhook(
        payload=body.encode(), signature_header=signature_for(body)
    )
    event = StripeEvent.objects.get()
    assert received.created is True
    assert received.event.pk == event.pk
    assert (event.stripe_id, event.type, event.livemode) == (
        "evt_well_formed",
        "customer.subscription.updated",
        True,
    )
    assert event.created.timestamp() == 1_700_000_000
    assert event.processed_at is None
    assert event.attempts == 0
    # Due at once: the outbox's drainers apply it on their next poll.
    assert before <= event.next_attempt_at <= timezone.now()

    again = stripe_events.receive_webhook(
        payload=body.encode(), signature_header=signature_for(body)
    )
    assert again.created is False
    assert again.event.pk == event.pk
    assert StripeEvent.objects.count() == 1


def test_an_escaped_character_beyond_the_basic_plane_is_stored_as_that_character(stripe_api):
    event = good_event()
    event["data"]["object"]["name"] = "Zoë 😀"
    body = json.dumps(event)  # ASCII only: the emoji as the escaped pair \ud83d\ude00
    assert "\\ud83d\\ude00" in body

    received = stripe_events.receive_webhook(
        payload=body.encode(), signature_header=signature_for(body)
    )

    assert received.created is True
    stored = StripeEvent.objects.get()
    assert stored.payload["data"]["object"]["name"] == "Zoë 😀"


# --- Processing: once, and only once --------------------------------------------------------


def test_an_event_already_processed_is_not_applied_again(stripe_api, reader, plan):
    subscription = subscribe(stripe_api, reader, plan)
    event = stored(stripe_api, "customer.subscription.created", subscription)
    assert stripe_events.process_event(event_id=event.pk) is True
    reads = len(stripe_api.requests_to("GET", "/v1/subscriptions/"))
    Membership.objects.all().delete()  # were it applied again, this would come back

    assert stripe_events.process_event(event_id=event.pk) is True

    event.refresh_from_db()
    assert event.attempts == 1
    assert len(stripe_api.requests_to("GET", "/v1/subscriptions/")) == reads
    assert not Membership.objects.exists()


def test_processing_an_event_that_does_not_exist_reports_false():
    assert stripe_events.process_event(event_id=987654) is False


def test_a_successful_attempt_clears_the_error_and_the_next_attempt(stripe_api, reader, plan):
    subscription = subscribe(stripe_api, reader, plan)
    event = stored(stripe_api, "customer.subscription.created", subscription)
    StripeEvent.objects.filter(pk=event.pk).update(attempts=3, error="Earlier failure")

    assert stripe_events.process_event(event_id=event.pk) is True

    event.refresh_from_db()
    assert (event.attempts, event.error, event.next_attempt_at) == (4, "", None)
    assert event.processed_at is not None


def test_a_failure_is_recorded_with_its_message_and_a_growing_delay(stripe_api, settings):
    event = StripeEvent.objects.create(
        stripe_id="evt_fails",
        type="customer.subscription.updated",
        created=timezone.now(),
        payload={"data": {"object": {"id": "sub_missing", "object": "subscription"}}},
    )
    before = timezone.now()
    assert stripe_events.process_event(event_id=event.pk) is False
    event.refresh_from_db()
    assert event.attempts == 1
    assert "No such subscription" in event.error
    first_delay = event.next_attempt_at - before
    assert stripe_events.retry_delay(1) <= first_delay < stripe_events.retry_delay(2)

    before = timezone.now()
    assert stripe_events.process_event(event_id=event.pk) is False
    event.refresh_from_db()
    assert event.attempts == 2
    assert stripe_events.retry_delay(2) <= event.next_attempt_at - before
    assert event.next_attempt_at - before < stripe_events.retry_delay(3)
    assert event.processed_at is None


def test_the_sweeper_claims_only_due_unprocessed_events_and_pushes_them_back():
    now = timezone.now()

    def event(name, **fields):
        return StripeEvent.objects.create(
            stripe_id=name, type="payout.paid", created=now, payload={}, **fields
        )

    due = event("evt_due", next_attempt_at=now - timezone.timedelta(minutes=1))
    event("evt_later", next_attempt_at=now + timezone.timedelta(minutes=1))
    event("evt_done", next_attempt_at=now - timezone.timedelta(minutes=1), processed_at=now)
    event(
        "evt_spent",
        next_attempt_at=now - timezone.timedelta(minutes=1),
        attempts=stripe_events.MAX_ATTEMPTS,
    )
    event("evt_never", next_attempt_at=None)

    assert stripe_events.claim_due_events(now=now) == [due.pk]
    due.refresh_from_db()
    assert due.next_attempt_at == now + stripe_events.SAFETY_NET_DELAY
    assert stripe_events.claim_due_events(now=now) == []


def test_an_editors_retry_gives_a_failed_event_fresh_attempts_due_at_once():
    now = timezone.now()
    failed = StripeEvent.objects.create(
        stripe_id="evt_failed",
        type="payout.paid",
        created=now,
        payload={},
        attempts=stripe_events.MAX_ATTEMPTS,
        next_attempt_at=None,
    )
    done = StripeEvent.objects.create(
        stripe_id="evt_done", type="payout.paid", created=now, payload={}, processed_at=now
    )
    other = StripeEvent.objects.create(
        stripe_id="evt_other_failure",
        type="payout.paid",
        created=now,
        payload={},
        attempts=stripe_events.MAX_ATTEMPTS,
        next_attempt_at=None,
    )
    stripe_events.schedule_retry_now(event=failed)
    stripe_events.schedule_retry_now(event=done)
    failed.refresh_from_db()
    done.refresh_from_db()
    other.refresh_from_db()
    assert failed.attempts == 0
    assert now <= failed.next_attempt_at <= timezone.now()
    assert done.next_attempt_at is None
    assert (other.attempts, other.next_attempt_at) == (stripe_events.MAX_ATTEMPTS, None)
    assert stripe_events.claim_due_events() == [failed.pk]


def test_the_sweeper_claims_a_hundred_events_at_a_time_the_longest_due_first():
    now = timezone.now()
    StripeEvent.objects.bulk_create(
        StripeEvent(
            stripe_id=f"evt_due_{n:03}",
            type="payout.paid",
            created=now,
            payload={},
            next_attempt_at=now - timezone.timedelta(minutes=n + 1),
        )
        for n in range(101)
    )
    first = stripe_events.claim_due_events(now=now)
    assert len(first) == 100
    left = StripeEvent.objects.exclude(pk__in=first).get()
    assert left.stripe_id == "evt_due_000"  # the one due most recently
    assert stripe_events.claim_due_events(now=now) == [left.pk]


# --- What each subscription event does --------------------------------------------------------


def test_a_paused_subscription_ends_access_and_resuming_it_gives_it_back(
    stripe_api, reader, plan, stripe_webhooks
):
    subscription = subscribe(stripe_api, reader, plan)
    stripe_webhooks.deliver("customer.subscription.created", subscription)
    assert access.subscriber_is_paid(subscriber=reader)

    paused = stripe_api.update_subscription(subscription["id"], status="paused")
    stripe_webhooks.deliver("customer.subscription.paused", paused)
    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert membership.status == Membership.Status.PAUSED
    assert not access.subscriber_is_paid(subscriber=reader)

    resumed = stripe_api.update_subscription(subscription["id"], status="active")
    stripe_webhooks.deliver("customer.subscription.resumed", resumed)
    membership.refresh_from_db()
    assert membership.status == Membership.Status.ACTIVE
    assert access.subscriber_is_paid(subscriber=reader)
    assert StripeEvent.objects.filter(processed_at__isnull=True).count() == 0


def test_a_subscription_set_to_cancel_on_a_date_is_marked_as_ending_and_another_is_not(
    stripe_api, reader, plan, stripe_webhooks
):
    """Stripe's newer way to cancel later sets `cancel_at` (a date) and leaves
    `cancel_at_period_end` false; either way the membership is known to be ending."""
    other = SubscriberFactory(email="other@example.com")
    other_customer = stripe_api.add_customer(email=other.email)
    Subscriber.objects.filter(pk=other.pk).update(stripe_customer_id=other_customer["id"])
    ending = subscribe(stripe_api, reader, plan)
    going_on = stripe_api.add_subscription(
        customer=other_customer["id"], price=plan.stripe_price_id
    )
    ends_at = int(timezone.now().timestamp()) + 10 * 86400
    ending = stripe_api.update_subscription(
        ending["id"], cancel_at=ends_at, cancel_at_period_end=False
    )

    for subscription in (ending, going_on):
        stripe_webhooks.deliver("customer.subscription.updated", subscription)

    marked = dict(Membership.objects.values_list("stripe_subscription_id", "cancel_at_period_end"))
    assert marked == {ending["id"]: True, going_on["id"]: False}
    assert access.subscriber_is_paid(subscriber=reader)  # paid for until that date


@pytest.mark.parametrize("status", ["trialing", "past_due"])
def test_a_trial_or_a_past_due_renewal_counts_as_paid_for_and_confirms_a_pending_reader(
    stripe_api, plan, status, stripe_webhooks
):
    pending = SubscriberFactory(email="pending@example.com", status=Subscriber.Status.PENDING)
    customer = stripe_api.add_customer(email=pending.email)
    subscription = stripe_api.add_subscription(
        customer=customer["id"], price=plan.stripe_price_id, status=status
    )
    stripe_webhooks.deliver("customer.subscription.created", subscription)

    pending.refresh_from_db()
    assert pending.status == Subscriber.Status.ACTIVE
    assert pending.memberships.get().status == status


@pytest.mark.parametrize("status", ["trialing", "past_due"])
def test_a_trial_or_a_past_due_renewal_from_an_unknown_address_makes_a_reader(
    stripe_api, plan, status, stripe_webhooks
):
    customer = stripe_api.add_customer(email="new@example.com", name="New Reader")
    subscription = stripe_api.add_subscription(
        customer=customer["id"], price=plan.stripe_price_id, status=status
    )
    stripe_webhooks.deliver("customer.subscription.created", subscription)
    reader = Subscriber.objects.get(email="new@example.com")
    assert reader.status == Subscriber.Status.ACTIVE
    assert reader.memberships.get().status == status


@pytest.mark.parametrize("status", ["incomplete", "unpaid", "canceled", "paused"])
def test_a_subscription_nobody_paid_for_leaves_a_pending_reader_pending(
    stripe_api, plan, status, stripe_webhooks
):
    pending = SubscriberFactory(email="pending@example.com", status=Subscriber.Status.PENDING)
    customer = stripe_api.add_customer(email=pending.email)
    subscription = stripe_api.add_subscription(
        customer=customer["id"], price=plan.stripe_price_id, status=status
    )
    stripe_webhooks.deliver("customer.subscription.created", subscription)
    pending.refresh_from_db()
    assert pending.status == Subscriber.Status.PENDING
    assert not access.subscriber_is_paid(subscriber=pending)


def test_a_status_we_do_not_know_or_none_counts_as_incomplete_and_gives_no_access(
    stripe_api, plan, stripe_webhooks
):
    """A status Stripe adds one day (or a snapshot without one) is not taken as paid."""
    statuses = {"new@example.com": "some_future_status", "none@example.com": None}
    statuses["paying@example.com"] = "active"
    for email, status in statuses.items():
        SubscriberFactory(email=email)
        customer = stripe_api.add_customer(email=email)
        subscription = stripe_api.add_subscription(
            customer=customer["id"], price=plan.stripe_price_id
        )
        subscription = stripe_api.update_subscription(subscription["id"], status=status)
        stripe_webhooks.deliver("customer.subscription.created", subscription)

    mirrored = dict(Membership.objects.values_list("subscriber__email", "status"))
    assert mirrored == {
        "new@example.com": Membership.Status.INCOMPLETE,
        "none@example.com": Membership.Status.INCOMPLETE,
        "paying@example.com": Membership.Status.ACTIVE,
    }
    paid = {s.email for s in Subscriber.objects.all() if access.subscriber_is_paid(subscriber=s)}
    assert paid == {"paying@example.com"}


def test_a_canceled_subscription_ends_when_stripe_ended_it_else_when_it_was_canceled(
    stripe_api, plan, settings, stripe_webhooks
):
    """The membership's end (for churn) is Stripe's `ended_at`, else its `canceled_at`,
    else the time of the state that told us; each reader's own."""
    settings.STRIPE_SECRET_KEY = ""  # the events' snapshots, exactly as written here
    told_at = int(timezone.now().timestamp())
    canceled_on, ended_on = told_at - 5 * 86400, told_at - 86400
    ends = {
        "ended@example.com": {"canceled_at": canceled_on, "ended_at": ended_on},
        "canceled@example.com": {"canceled_at": canceled_on, "ended_at": None},
        "silent@example.com": {"canceled_at": None, "ended_at": None},
    }
    for email, times in ends.items():
        reader = SubscriberFactory(email=email)
        customer = stripe_api.add_customer(email=email)
        Subscriber.objects.filter(pk=reader.pk).update(stripe_customer_id=customer["id"])
        subscription = stripe_api.add_subscription(
            customer=customer["id"], price=plan.stripe_price_id
        )
        canceled = dict(subscription, status="canceled", **times)
        stripe_webhooks.deliver("customer.subscription.deleted", canceled, created=told_at)

    ended = {
        m.subscriber.email: int(m.canceled_at.timestamp())
        for m in Membership.objects.select_related("subscriber")
    }
    assert ended == {
        "ended@example.com": ended_on,
        "canceled@example.com": canceled_on,
        "silent@example.com": told_at,
    }
    assert set(Membership.objects.values_list("status", flat=True)) == {"canceled"}


def test_an_async_payment_that_succeeds_later_gives_the_reader_their_membership(
    stripe_api, plan, stripe_webhooks
):
    from tests.subscriptions.test_webhooks import paid_through_a_payment_link

    reader = SubscriberFactory(email="bank.transfer@example.com")
    price = stripe_api.get("price", plan.stripe_price_id)
    completed = paid_through_a_payment_link(stripe_api, price, email=reader.email)

    stripe_webhooks.deliver("checkout.session.async_payment_succeeded", completed)

    membership = reader.memberships.get()
    assert membership.stripe_subscription_id == completed["subscription"]
    assert membership.status == Membership.Status.ACTIVE


def test_a_checkout_still_open_or_for_a_one_off_payment_makes_no_membership(
    stripe_api, plan, stripe_webhooks, settings
):
    settings.STRIPE_SECRET_KEY = ""  # the snapshots themselves are what gets applied
    SubscriberFactory(email="payer@example.com")
    base = {"id": "cs_test_1", "object": "checkout.session", "customer": None,
            "customer_details": {"email": "payer@example.com"}, "metadata": {}}  # fmt: skip
    for n, session in enumerate(
        [
            {**base, "mode": "subscription", "subscription": "sub_x", "status": "open"},
            {**base, "mode": "subscription", "subscription": None, "status": "complete"},
            {**base, "mode": "setup", "subscription": "sub_x", "status": "complete"},
        ]
    ):
        stripe_webhooks.deliver("checkout.session.completed", {**session, "id": f"cs_{n}"})
    assert not Membership.objects.exists()
    assert StripeEvent.objects.filter(processed_at__isnull=False).count() == 3


# --- The payment-failed email ---------------------------------------------------------------


def test_a_failed_renewal_emails_the_reader_once_with_the_amount_and_the_links(
    stripe_api, reader, plan, stripe_webhooks
):
    subscription = subscribe(stripe_api, reader, plan)
    stripe_webhooks.deliver("customer.subscription.created", subscription)
    invoice = stripe_api.fail_invoice(subscription["id"])

    stripe_webhooks.deliver("invoice.payment_failed", invoice)

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["reader@example.com"]
    assert message.subject == "Your payment did not go through"
    assert "€12.50" in message.body
    assert "http://testserver/account/billing/" in message.body
    assert invoice["hosted_invoice_url"] in message.body


@pytest.mark.parametrize("status", [Subscriber.Status.BOUNCED, Subscriber.Status.COMPLAINED])
def test_no_payment_failed_email_goes_to_an_address_that_bounced_or_complained(
    stripe_api, reader, plan, status, stripe_webhooks
):
    subscription = subscribe(stripe_api, reader, plan)
    stripe_webhooks.deliver("customer.subscription.created", subscription)
    Subscriber.objects.filter(pk=reader.pk).update(status=status)

    stripe_webhooks.deliver("invoice.payment_failed", stripe_api.fail_invoice(subscription["id"]))

    assert mail.outbox == []
    assert Membership.objects.get().status == Membership.Status.PAST_DUE


def test_a_payment_failure_reported_once_the_subscription_is_in_a_trial_again_sends_no_email(
    stripe_api, reader, plan, stripe_webhooks
):
    """The editor granted a trial after the renewal failed (Stripe then has the
    subscription `trialing`): nothing is left for the reader to fix. Another reader whose
    renewal failed and stays past due is still told."""
    other = SubscriberFactory(email="other@example.com")
    other_customer = stripe_api.add_customer(email=other.email)
    Subscriber.objects.filter(pk=other.pk).update(stripe_customer_id=other_customer["id"])
    other_subscription = stripe_api.add_subscription(
        customer=other_customer["id"], price=plan.stripe_price_id
    )
    subscription = subscribe(stripe_api, reader, plan)
    for created in (subscription, other_subscription):
        stripe_webhooks.deliver("customer.subscription.created", created)
    failed = stripe_api.fail_invoice(subscription["id"])
    other_failed = stripe_api.fail_invoice(other_subscription["id"])
    stripe_api.update_subscription(subscription["id"], status="trialing")

    for invoice in (failed, other_failed):
        stripe_webhooks.deliver("invoice.payment_failed", invoice)

    assert [message.to for message in mail.outbox] == [["other@example.com"]]
    statuses = dict(Membership.objects.values_list("subscriber__email", "status"))
    assert statuses == {
        "reader@example.com": Membership.Status.TRIALING,
        "other@example.com": Membership.Status.PAST_DUE,
    }


def test_a_failed_invoice_without_a_subscription_or_for_a_donation_sends_nothing(
    stripe_api, reader, plan, stripe_webhooks
):
    subscription = subscribe(stripe_api, reader, plan)
    invoice = stripe_api.fail_invoice(subscription["id"])
    one_off = {**invoice, "id": "in_one_off", "parent": None}
    donation = {
        **invoice,
        "id": "in_donation",
        "parent": {
            "type": "subscription_details",
            "subscription_details": {
                "subscription": subscription["id"],
                "metadata": {"broadside_purpose": "donation"},
            },
        },
    }
    for failed in (one_off, donation):
        stripe_webhooks.deliver("invoice.payment_failed", failed)

    assert mail.outbox == []
    assert not Membership.objects.exists()
    assert StripeEvent.objects.filter(processed_at__isnull=False).count() == 2


def test_a_failed_invoice_of_a_subscription_nobody_ever_paid_sends_nothing(
    stripe_api, plan, stripe_webhooks
):
    customer = stripe_api.add_customer(email="stranger@example.com")
    subscription = stripe_api.add_subscription(
        customer=customer["id"], price=plan.stripe_price_id, status="incomplete"
    )
    invoice = stripe_api.fail_invoice(subscription["id"])
    stripe_api.update_subscription(subscription["id"], status="incomplete")

    stripe_webhooks.deliver("invoice.payment_failed", invoice)

    assert mail.outbox == []
    assert not Subscriber.objects.filter(email="stranger@example.com").exists()


# --- A dispute: the editors, and only they, are told ----------------------------------------


def test_a_dispute_is_told_to_every_active_editor_with_an_address_and_to_nobody_else(
    stripe_api, stripe_webhooks
):
    from tests.factories import StaffUserFactory, UserFactory

    StaffUserFactory(email="editor.one@example.com")
    StaffUserFactory(email="editor.two@example.com")
    StaffUserFactory(email="gone@example.com", is_active=False)
    StaffUserFactory(email="")
    UserFactory(email="reader@example.com")
    dispute = {"id": "du_1", "object": "dispute", "payment_intent": "pi_unknown",
               "amount": 123456, "currency": "gbp", "reason": "fraudulent"}  # fmt: skip

    stripe_webhooks.deliver("charge.dispute.created", dispute)

    assert sorted(message.to[0] for message in mail.outbox) == [
        "editor.one@example.com",
        "editor.two@example.com",
    ]
    for message in mail.outbox:
        assert message.subject == "A payment of £1,234.56 is disputed"
        assert "A payment of £1,234.56 has been disputed (reason: fraudulent)." in message.body
    assert StripeEvent.objects.get().needs_attention is True


def test_a_dispute_without_an_amount_or_currency_is_told_as_zero_dollars(
    stripe_api, stripe_webhooks
):
    from tests.factories import StaffUserFactory

    StaffUserFactory(email="editor@example.com")
    stripe_webhooks.deliver("charge.dispute.created", {"id": "du_2", "object": "dispute"})
    (message,) = mail.outbox
    assert message.subject == "A payment of $0.00 is disputed"


def test_a_dispute_of_a_donation_names_the_donor(stripe_api, stripe_webhooks, settings):
    from subscriptions.models import Donation
    from tests.factories import StaffUserFactory

    StaffUserFactory(email="editor@example.com")
    donation = Donation.objects.create(
        email="donor@example.com",
        amount=2500,
        currency="usd",
        status=Donation.Status.PAID,
        stripe_payment_intent_id="pi_donation",
    )
    dispute = {"id": "du_3", "object": "dispute", "payment_intent": "pi_donation",
               "amount": 2500, "currency": "usd"}  # fmt: skip

    stripe_webhooks.deliver("charge.dispute.created", dispute)

    donation.refresh_from_db()
    assert donation.status == Donation.Status.DISPUTED
    (message,) = mail.outbox
    assert message.subject == "A payment of $25.00 is disputed"
    assert "It is the donation from donor@example.com made on" in message.body


def test_a_failed_attempt_keeps_only_the_failure_not_the_flag_its_handler_had_set(
    stripe_api, stripe_webhooks
):
    from tests.factories import StaffUserFactory

    StaffUserFactory(email="editor@example.com")
    dispute = {"id": "du_4", "object": "dispute", "amount": "a lot", "currency": "usd"}

    stripe_webhooks.deliver("charge.dispute.created", dispute)

    event = StripeEvent.objects.get()
    assert (event.processed_at, event.attempts) == (None, 1)
    assert event.error.startswith("ValueError: ")
    # The savepoint undid the handler's work; the flag is set when the event is applied.
    assert event.needs_attention is False
    assert mail.outbox == []


# --- Finding the reader and the subscription ---------------------------------------------------


def test_an_invoice_names_its_subscription_in_the_old_and_the_new_api_shapes(
    stripe_api, reader, plan, stripe_webhooks
):
    shapes = [
        lambda invoice, sub: {**invoice, "parent": None, "subscription": sub},
        lambda invoice, sub: {**invoice, "parent": None, "subscription": {"id": sub}},
        lambda invoice, sub: invoice,  # parent.subscription_details.subscription
    ]
    for shape in shapes:
        subscription = subscribe(stripe_api, reader, plan)
        invoice = stripe_api.renew_subscription(subscription["id"])
        stripe_webhooks.deliver("invoice.paid", shape(invoice, subscription["id"]))
        membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
        assert membership.subscriber == reader
        assert membership.status == Membership.Status.ACTIVE
    assert Membership.objects.count() == 3


def test_an_invoice_of_no_subscription_changes_no_membership(stripe_api, reader, stripe_webhooks):
    one_off = {"id": "in_one_off", "object": "invoice", "customer": reader.stripe_customer_id,
               "parent": None, "subscription": None, "amount_paid": 500}  # fmt: skip
    stripe_webhooks.deliver("invoice.paid", one_off)
    assert not Membership.objects.exists()
    assert StripeEvent.objects.get().processed_at is not None
    assert not stripe_api.requests_to("GET", "/v1/subscriptions/")


@pytest.mark.parametrize("kind", ["invoice.paid", "invoice.payment_failed", "checkout"])
def test_without_an_api_key_an_event_that_is_no_subscription_snapshot_fails_clearly(
    stripe_api, reader, plan, settings, stripe_webhooks, kind
):
    """An invoice or a Checkout Session is no subscription to mirror: with Stripe not
    to be asked, the event fails saying why."""
    from tests.subscriptions.test_webhooks import paid_through_a_payment_link

    subscription = subscribe(stripe_api, reader, plan)
    if kind == "checkout":
        price = stripe_api.get("price", plan.stripe_price_id)
        kind, obj = (
            "checkout.session.completed",
            paid_through_a_payment_link(stripe_api, price, email=reader.email),
        )
    elif kind == "invoice.paid":
        obj = stripe_api.renew_subscription(subscription["id"])
    else:
        obj = stripe_api.fail_invoice(subscription["id"])
    settings.STRIPE_SECRET_KEY = ""

    stripe_webhooks.deliver(kind, obj)

    event = StripeEvent.objects.get()
    assert event.processed_at is None
    assert event.error.split(": ", 1)[1] == "STRIPE_SECRET_KEY is not set; cannot re-read Stripe."
    assert not Membership.objects.exists()


def test_a_customer_without_an_email_cannot_be_matched_and_the_event_fails_clearly(
    stripe_api, plan, stripe_webhooks
):
    customer = stripe_api.add_customer(email="")
    subscription = stripe_api.add_subscription(customer=customer["id"], price=plan.stripe_price_id)

    stripe_webhooks.deliver("customer.subscription.created", subscription)

    event = StripeEvent.objects.get()
    assert event.processed_at is None
    assert f"Customer {customer['id']} has no email" in event.error
    assert not Subscriber.objects.exists()


def test_a_known_membership_keeps_its_reader_whatever_the_subscription_metadata_says(
    stripe_api, reader, plan, stripe_webhooks
):
    other = SubscriberFactory(email="other@example.com", status=Subscriber.Status.PENDING)
    subscription = subscribe(stripe_api, reader, plan)
    stripe_webhooks.deliver("customer.subscription.created", subscription)
    renamed = stripe_api.update_subscription(
        subscription["id"], metadata={"subscriber_id": str(other.pk)}
    )

    stripe_webhooks.deliver("customer.subscription.updated", renamed)

    assert Membership.objects.get().subscriber == reader
    other.refresh_from_db()
    assert other.stripe_customer_id is None
    # Nor is the reader the metadata names confirmed by a payment that is not theirs.
    assert other.status == Subscriber.Status.PENDING


def test_a_new_subscription_goes_to_its_payer_while_others_hold_granted_memberships(
    stripe_api, reader, plan, stripe_webhooks
):
    """Comp and gift memberships have no Stripe subscription: none of them is taken
    for the subscription being applied."""
    bystander = Subscriber.objects.get(email="bystander@example.com")
    comp = MembershipFactory(
        subscriber=bystander, kind=Membership.Kind.COMP, stripe_subscription_id=None
    )
    subscription = subscribe(stripe_api, reader, plan)

    stripe_webhooks.deliver("customer.subscription.created", subscription)

    assert Membership.objects.get(stripe_subscription_id=subscription["id"]).subscriber == reader
    assert list(bystander.memberships.all()) == [comp]


def test_our_metadata_names_the_reader_of_a_new_subscription_before_the_customer_does(
    stripe_api, plan, stripe_webhooks
):
    SubscriberFactory(email="payer@example.com")
    named = SubscriberFactory(email="named@example.com")
    customer = stripe_api.add_customer(email="payer@example.com")
    subscription = stripe_api.add_subscription(
        customer=customer["id"],
        price=plan.stripe_price_id,
        metadata={"subscriber_id": str(named.pk)},
    )

    stripe_webhooks.deliver("customer.subscription.created", subscription)

    assert Membership.objects.get().subscriber == named
    named.refresh_from_db()
    assert named.stripe_customer_id == customer["id"]


def test_monthly_support_makes_no_membership_and_its_renewal_is_a_donation(
    stripe_api, reader, plan, stripe_webhooks
):
    from subscriptions.models import Donation

    support = subscribe(stripe_api, reader, plan, metadata={"broadside_purpose": "donation"})
    stripe_webhooks.deliver("customer.subscription.created", support)
    assert not Membership.objects.exists()

    renewal = stripe_api.renew_subscription(support["id"])
    # The invoice lost the purpose (an older invoice shape): the subscription still says it.
    renewal["parent"]["subscription_details"]["metadata"] = {}
    stripe_webhooks.deliver("invoice.paid", renewal)

    assert not Membership.objects.exists()
    donation = Donation.objects.get()
    assert donation.stripe_subscription_id == support["id"]
    assert donation.recurring is True


def test_nul_characters_are_taken_out_of_keys_and_lists_too(stripe_api):
    event = {**good_event(), "data": {"object": {"tags": ["a\u0000b", {"k\u0000": "v\u0000"}]}}}
    body = json.dumps(event)
    stripe_events.receive_webhook(payload=body.encode(), signature_header=signature_for(body))
    assert StripeEvent.objects.get().payload["data"]["object"] == {"tags": ["ab", {"k": "v"}]}


def test_an_overlong_id_and_type_are_cut_to_fit_and_still_recognised_when_sent_again(
    stripe_api,
):
    event = {**good_event(), "id": "evt_" + "x" * 150, "type": "t" * 150}
    body = json.dumps(event)
    for _ in range(2):
        stripe_events.receive_webhook(payload=body.encode(), signature_header=signature_for(body))
    stored = StripeEvent.objects.get()
    assert stored.stripe_id == ("evt_" + "x" * 150)[:100]
    assert stored.type == "t" * 100


def test_retries_wait_one_two_four_minutes_and_so_on_up_to_six_hours():
    minutes = [stripe_events.retry_delay(n).total_seconds() / 60 for n in range(0, 12)]
    assert minutes == [1, 1, 2, 4, 8, 16, 32, 64, 128, 256, 360, 360]


def test_a_failure_message_is_kept_to_four_thousand_characters(stripe_api):
    event = StripeEvent.objects.create(
        stripe_id="evt_long_failure",
        type="customer.subscription.updated",
        created=timezone.now(),
        payload={"data": {"object": {"id": "sub_" + "x" * 5000, "object": "subscription"}}},
    )
    assert stripe_events.process_event(event_id=event.pk) is False
    event.refresh_from_db()
    assert len(event.error) == 4000
    # The start is kept: the error's type and Stripe's own words.
    assert event.error.startswith(
        "subscriptions.stripe_client.StripeNotFound: No such subscription: 'sub_xxx"
    )


def test_a_failed_renewal_without_an_amount_currency_or_invoice_link_still_reads_right(
    stripe_api, reader, plan, stripe_webhooks
):
    subscription = subscribe(stripe_api, reader, plan)
    stripe_webhooks.deliver("customer.subscription.created", subscription)
    invoice = stripe_api.fail_invoice(subscription["id"])
    bare = {**invoice, "amount_due": None, "currency": None, "hosted_invoice_url": None}

    stripe_webhooks.deliver("invoice.payment_failed", bare)

    (message,) = mail.outbox
    assert "We could not take the payment of $0.00 for your" in message.body
    assert "pay this invoice directly" not in message.body


def test_a_pending_reader_who_pays_from_a_payment_link_is_recorded_as_consenting(
    stripe_api, plan, stripe_webhooks
):
    customer = stripe_api.add_customer(email="payer.new@example.com", name="P" * 250)
    subscription = stripe_api.add_subscription(customer=customer["id"], price=plan.stripe_price_id)
    before = timezone.now()

    stripe_webhooks.deliver("customer.subscription.created", subscription)

    payer = Subscriber.objects.get(email="payer.new@example.com")
    assert payer.status == Subscriber.Status.ACTIVE
    assert payer.name == "P" * 200
    assert payer.consent_source == "stripe"
    assert before <= payer.consent_at <= timezone.now()
    assert before <= payer.confirmed_at <= timezone.now()


def test_an_invoice_that_says_it_is_for_monthly_support_is_a_donation_not_a_membership(
    stripe_api, reader, plan, stripe_webhooks
):
    from subscriptions.models import Donation

    support = subscribe(stripe_api, reader, plan)
    renewal = stripe_api.renew_subscription(support["id"])
    renewal["parent"]["subscription_details"]["metadata"] = {"broadside_purpose": "donation"}

    stripe_webhooks.deliver("invoice.paid", renewal)

    assert not Membership.objects.exists()
    assert Donation.objects.get().stripe_subscription_id == support["id"]


def checkout_paid_by(stripe_api, plan, *, email: str, metadata: dict):
    from subscriptions import stripe_client

    session = stripe_client.create_checkout_session(
        params={
            "mode": "subscription",
            "line_items": [{"price": plan.stripe_price_id, "quantity": 1}],
            "success_url": "https://example.com/thanks",
            "metadata": metadata,
        },
        idempotency_key=f"checkout-{email}",
    )
    return session, stripe_api.complete_checkout(session["id"], email=email)


def test_a_checkout_our_site_opened_goes_to_the_reader_it_names_not_to_the_payers_address(
    stripe_api, plan, stripe_webhooks
):
    named = SubscriberFactory(email="named@example.com", status=Subscriber.Status.PENDING)
    SubscriberFactory(email="card.holder@example.com")
    _open, completed = checkout_paid_by(
        stripe_api, plan, email="card.holder@example.com", metadata={"subscriber_id": str(named.pk)}
    )

    stripe_webhooks.deliver("checkout.session.completed", completed)

    membership = Membership.objects.get()
    assert membership.subscriber == named
    named.refresh_from_db()
    assert named.status == Subscriber.Status.ACTIVE
    assert named.stripe_customer_id == completed["customer"]


def test_a_checkout_event_is_applied_as_stripe_has_the_session_now_not_as_the_event_says(
    stripe_api, plan, stripe_webhooks
):
    reader = SubscriberFactory(email="reader@example.com")
    opened, completed = checkout_paid_by(
        stripe_api, plan, email=reader.email, metadata={"subscriber_id": str(reader.pk)}
    )
    # An event about the session while it was still open, delivered after it was paid.
    stripe_webhooks.deliver("checkout.session.completed", {**opened, "status": "open"})

    assert Membership.objects.get().stripe_subscription_id == completed["subscription"]


def test_a_payer_stripe_knows_no_name_for_gets_none(stripe_api, plan, stripe_webhooks):
    customer = stripe_api.add_customer(email="anonymous.payer@example.com")
    subscription = stripe_api.add_subscription(customer=customer["id"], price=plan.stripe_price_id)
    stripe_webhooks.deliver("customer.subscription.created", subscription)
    assert Subscriber.objects.get(email="anonymous.payer@example.com").name == ""


@pytest.mark.parametrize("where", ["customer_details", "customer_email"])
def test_a_payment_link_checkout_goes_to_the_address_typed_at_checkout(
    stripe_api, plan, stripe_webhooks, where
):
    from tests.subscriptions.test_webhooks import paid_through_a_payment_link

    typed = SubscriberFactory(email="typed@example.com", status=Subscriber.Status.PENDING)
    price = stripe_api.get("price", plan.stripe_price_id)
    completed = paid_through_a_payment_link(stripe_api, price, email="card.holder@example.com")
    # The Stripe customer kept another address than the one typed at Checkout.
    session = stripe_api._store.get("checkout.session", completed["id"])
    if where == "customer_details":
        session["customer_details"] = {"email": "typed@example.com", "name": None}
    else:
        session["customer_details"] = {"email": None, "name": None}
        session["customer_email"] = "typed@example.com"

    stripe_webhooks.deliver(
        "checkout.session.completed", stripe_api.get("checkout.session", completed["id"])
    )

    assert Membership.objects.get().subscriber == typed
    typed.refresh_from_db()
    assert typed.status == Subscriber.Status.ACTIVE
    assert typed.stripe_customer_id == completed["customer"]
    assert not Subscriber.objects.filter(email="card.holder@example.com").exists()


def test_a_checkout_by_a_stripe_customer_we_know_goes_to_that_customer_s_reader(
    stripe_api, plan, stripe_webhooks
):
    """No reader named in our metadata (a Payment Link), but the paying customer is one
    a reader of ours already has: the membership is that reader's, not the owner's of
    the address typed at Checkout."""
    from tests.subscriptions.test_webhooks import paid_through_a_payment_link

    typed = SubscriberFactory(email="typed@example.com")
    price = stripe_api.get("price", plan.stripe_price_id)
    completed = paid_through_a_payment_link(stripe_api, price, email="card.holder@example.com")
    holder = SubscriberFactory(email="holder@example.com", stripe_customer_id=completed["customer"])
    session = stripe_api._store.get("checkout.session", completed["id"])
    session["customer_details"] = {"email": "typed@example.com", "name": None}

    stripe_webhooks.deliver(
        "checkout.session.completed", stripe_api.get("checkout.session", completed["id"])
    )

    assert Membership.objects.get().subscriber == holder
    assert not typed.memberships.exists()


def test_an_old_shape_invoice_marked_as_monthly_support_is_a_donation(
    stripe_api, reader, plan, stripe_webhooks
):
    from subscriptions.models import Donation

    support = subscribe(stripe_api, reader, plan)
    renewal = stripe_api.renew_subscription(support["id"])
    old_shape = {
        **renewal,
        "parent": None,
        "subscription": support["id"],
        "subscription_details": {"metadata": {"broadside_purpose": "donation"}},
    }

    stripe_webhooks.deliver("invoice.paid", old_shape)

    assert not Membership.objects.exists()
    assert Donation.objects.get().stripe_subscription_id == support["id"]


# --- The discount mirrored for the revenue figures ---------------------------------------------


def test_each_reader_s_discount_is_mirrored_as_stripe_describes_it(
    stripe_api, plan, settings, stripe_webhooks
):
    """Percent or amount off, until the discount's end; a once-only coupon lasts the
    period it was applied in (the current one, or a past one when applied before it
    began); the coupon where API versions before 2025-09-30 put it, too."""
    settings.STRIPE_SECRET_KEY = ""  # the events' snapshots, exactly as written here
    day = 86400
    told_at = int(timezone.now().timestamp())
    period_start, period_end = told_at - 10 * day, told_at + 20 * day

    def discount(coupon, *, start=period_start, end=None, old_shape=False):
        placed = {"coupon": coupon} if old_shape else {"source": {"coupon": coupon}}
        return {"id": stripe_api.new_id("di"), "start": start, "end": end, **placed}

    discounts = {
        "percent@example.com": [
            discount({"percent_off": 25.0, "duration": "repeating"}, end=told_at + 60 * day)
        ],
        "amount@example.com": [discount({"amount_off": 300, "duration": "forever"})],
        "once-now@example.com": [
            discount({"percent_off": 50.0, "duration": "once"}, start=period_start + 60)
        ],
        "once-before@example.com": [
            discount({"amount_off": 500, "duration": "once"}, start=period_start - 2 * day)
        ],
        "old-shape@example.com": [
            discount({"amount_off": 200, "duration": "forever"}, old_shape=True)
        ],
        # Applied at checkout, moments before the period began: this period's.
        "once-at-checkout@example.com": [
            discount({"amount_off": 100, "duration": "once"}, start=period_start - 30 * 60)
        ],
        "once-90-minutes-before@example.com": [
            discount({"amount_off": 100, "duration": "once"}, start=period_start - 90 * 60)
        ],
        # Only the first coupon Stripe gives in full counts.
        "several@example.com": [
            {
                "id": "di_unexpanded",
                "start": period_start,
                "end": None,
                "source": {"coupon": "co_1"},
            },
            discount({"percent_off": 10.0, "duration": "forever"}),
            discount({"amount_off": 100, "duration": "forever"}),
        ],
        "none@example.com": [],
    }
    for email, given in discounts.items():
        reader = SubscriberFactory(email=email)
        customer = stripe_api.add_customer(email=email)
        Subscriber.objects.filter(pk=reader.pk).update(stripe_customer_id=customer["id"])
        subscription = stripe_api.add_subscription(
            customer=customer["id"], price=plan.stripe_price_id
        )
        for item in subscription["items"]["data"]:
            item["current_period_start"], item["current_period_end"] = period_start, period_end
        snapshot = dict(subscription, discounts=given)
        stripe_webhooks.deliver("customer.subscription.updated", snapshot, created=told_at)

    def seconds(moment):
        return int(moment.timestamp()) if moment else None

    mirrored = {
        m.subscriber.email: (
            m.discount_percent_off,
            m.discount_amount_off,
            seconds(m.discount_ends_at),
        )
        for m in Membership.objects.select_related("subscriber")
    }
    assert mirrored == {
        "percent@example.com": (25.0, None, told_at + 60 * day),
        "amount@example.com": (None, 300, None),
        "once-now@example.com": (50.0, None, period_end),
        "once-before@example.com": (None, 500, period_start),
        "old-shape@example.com": (None, 200, None),
        "once-at-checkout@example.com": (None, 100, period_end),
        "once-90-minutes-before@example.com": (None, 100, period_start),
        "several@example.com": (10.0, None, None),
        "none@example.com": (None, None, None),
    }


def test_a_snapshot_naming_discounts_by_id_keeps_what_we_knew_and_an_empty_list_clears_it(
    stripe_api, reader, plan, settings, stripe_webhooks
):
    """Event snapshots list discounts as bare ids; only an expanded list (or an empty
    one) says what the discount is now."""
    settings.STRIPE_SECRET_KEY = ""
    told_at = int(timezone.now().timestamp())
    subscription = subscribe(stripe_api, reader, plan)
    ends = told_at + 90 * 86400
    coupon = {"amount_off": 400, "duration": "repeating"}
    expanded = [{"id": "di_1", "start": told_at, "end": ends, "source": {"coupon": coupon}}]

    def deliver(discounts, at):
        snapshot = dict(subscription, discounts=discounts)
        stripe_webhooks.deliver("customer.subscription.updated", snapshot, created=at)
        m = Membership.objects.get()
        until = int(m.discount_ends_at.timestamp()) if m.discount_ends_at else None
        return m.discount_percent_off, m.discount_amount_off, until

    assert deliver(expanded, told_at) == (None, 400, ends)
    assert deliver(["di_1"], told_at + 1) == (None, 400, ends)
    assert deliver(None, told_at + 2) == (None, 400, ends)
    assert deliver([], told_at + 3) == (None, None, None)


def test_seats_trial_end_and_offer_are_mirrored_and_kept_when_a_later_state_leaves_them_out(
    stripe_api, reader, plan, settings, stripe_webhooks
):
    """A group's seats as Stripe counts them (at least one: an item without a quantity,
    or with none left, is the payer's own); the trial's end and the offer the reader
    came with stay known when a later state does not repeat them, and a second offer
    named later does not replace the first."""
    settings.STRIPE_SECRET_KEY = ""  # the snapshots below, exactly as written
    told_at = int(timezone.now().timestamp())
    trial_end = told_at + 7 * 86400
    spring, summer = (
        Offer.objects.create(code=code, name=code.title(), percent_off=10)
        for code in ("SPRING", "SUMMER")
    )
    subscription = subscribe(stripe_api, reader, plan)
    item = subscription["items"]["data"][0]

    def deliver(*, at, quantity, metadata, trial):
        snapshot = dict(
            subscription,
            metadata=metadata,
            trial_end=trial,
            items={"data": [dict(item, quantity=quantity)]},
        )
        stripe_webhooks.deliver("customer.subscription.updated", snapshot, created=at)
        m = Membership.objects.get()
        return m.quantity, int(m.trial_end.timestamp()) if m.trial_end else None, m.offer_id

    first = {"offer_id": str(spring.pk)}
    assert deliver(at=told_at, quantity=4, metadata=first, trial=trial_end) == (
        4,
        trial_end,
        spring.pk,
    )
    later = {"offer_id": str(summer.pk)}
    assert deliver(at=told_at + 1, quantity=None, metadata=later, trial=None) == (
        1,
        trial_end,
        spring.pk,
    )
    assert deliver(at=told_at + 2, quantity=0, metadata={}, trial=None) == (1, trial_end, spring.pk)
    assert Subscriber.objects.get(email="bystander@example.com").memberships.count() == 0


def test_a_failed_attempt_is_logged_as_an_error_naming_its_event_with_the_traceback(
    stripe_api, caplog
):
    failing, applied = (
        StripeEvent.objects.create(
            stripe_id=f"evt_{name}",
            type="customer.subscription.updated" if name == "fails" else "unknown.type",
            created=timezone.now(),
            payload={"data": {"object": {"id": "sub_missing", "object": "subscription"}}},
        )
        for name in ("fails", "applies")
    )
    with caplog.at_level("INFO", logger="subscriptions.services.stripe_events"):
        assert stripe_events.process_event(event_id=failing.pk) is False
        assert stripe_events.process_event(event_id=applied.pk) is True

    records = [r for r in caplog.records if r.name == "subscriptions.services.stripe_events"]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("ERROR", f"Processing Stripe event {failing.pk} failed")
    ]
    assert records[0].exc_info and "No such subscription" in str(records[0].exc_info[1])


def test_a_pending_reader_confirmed_by_a_subscription_keeps_the_consent_on_record_else_stripe(
    stripe_api, plan, stripe_webhooks
):
    """A pending reader whose subscription Stripe reports paid is confirmed: the consent
    they gave (a signup form's) stays on record, and one with none on record has
    consented by paying through Stripe."""
    signed_up = SubscriberFactory(
        email="signed.up@example.com",
        status=Subscriber.Status.PENDING,
        consent_source="signup form",
    )
    unrecorded = SubscriberFactory(
        email="unrecorded@example.com", status=Subscriber.Status.PENDING, consent_source=""
    )
    for reader in (signed_up, unrecorded):
        customer = stripe_api.add_customer(email=reader.email)
        Subscriber.objects.filter(pk=reader.pk).update(stripe_customer_id=customer["id"])
        subscription = stripe_api.add_subscription(
            customer=customer["id"], price=plan.stripe_price_id
        )
        stripe_webhooks.deliver("customer.subscription.created", subscription)

    confirmed = {
        s.email: (s.status, s.consent_source)
        for s in Subscriber.objects.filter(pk__in=[signed_up.pk, unrecorded.pk])
    }
    assert confirmed == {
        "signed.up@example.com": (Subscriber.Status.ACTIVE, "signup form"),
        "unrecorded@example.com": (Subscriber.Status.ACTIVE, "stripe"),
    }


def test_a_database_failure_while_applying_an_event_is_logged_and_recorded_as_an_attempt(
    caplog,
):
    """When the database itself fails mid-event (here: the statement that marks it
    processed), the error is logged naming the event, with the traceback, and the failed
    attempt is recorded, so the sweeper tries the event again later."""
    event, bystander = (
        StripeEvent.objects.create(
            stripe_id=f"evt_{name}",
            type="unknown.type",
            created=timezone.now(),
            payload={"data": {"object": {"id": "x", "object": "subscription"}}},
        )
        for name in ("db_fails", "bystander")
    )
    failures = []

    def fail_the_first_update(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith("UPDATE") and not failures:
            failures.append(sql)
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with (
        caplog.at_level("INFO", logger="subscriptions.services.stripe_events"),
        connection.execute_wrapper(fail_the_first_update),
    ):
        assert stripe_events.process_event(event_id=event.pk) is False

    assert failures, "the marking statement never ran"
    records = [r for r in caplog.records if r.name == "subscriptions.services.stripe_events"]
    assert [(r.levelname, r.getMessage()) for r in records] == [
        ("ERROR", f"Processing Stripe event {event.pk} failed")
    ]
    assert records[0].exc_info and isinstance(records[0].exc_info[1], OperationalError)
    event.refresh_from_db()
    assert event.processed_at is None
    assert event.attempts == 1
    assert event.error == (
        "django.db.utils.OperationalError: server closed the connection unexpectedly"
    )
    assert event.next_attempt_at is not None
    bystander.refresh_from_db()
    assert (bystander.attempts, bystander.error, bystander.processed_at) == (0, "", None)


def test_a_database_failure_on_an_event_another_worker_applied_meanwhile_is_not_counted():
    """The failed attempt is recorded in a new transaction; if another worker applied the
    event in between, the event stays applied with no failure on record."""
    event = StripeEvent.objects.create(
        stripe_id="evt_applied_meanwhile",
        type="unknown.type",
        created=timezone.now(),
        payload={"data": {"object": {"id": "x", "object": "subscription"}}},
    )
    applied_at = timezone.now()
    steps = []

    def fail_then_let_another_worker_apply_it(execute, sql, params, many, context):
        statement = sql.lstrip().upper()
        if not steps and statement.startswith("UPDATE"):
            steps.append("failed")
            raise OperationalError("server closed the connection unexpectedly")
        if steps == ["failed"] and statement.startswith("SELECT"):
            steps.append("applied by another worker")
            StripeEvent.objects.filter(pk=event.pk).update(processed_at=applied_at, attempts=1)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fail_then_let_another_worker_apply_it):
        assert stripe_events.process_event(event_id=event.pk) is False

    assert steps == ["failed", "applied by another worker"]
    event.refresh_from_db()
    assert (event.processed_at, event.attempts, event.error) == (applied_at, 1, "")
