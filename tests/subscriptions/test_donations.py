"""Donations: the form, Checkout in payment and subscription mode, the webhook, refunds."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core import mail

from subscriptions.models import Donation, Membership, StripeEvent
from subscriptions.services import revenue
from tests.factories import StaffUserFactory, SubscriberFactory, UserFactory

pytestmark = pytest.mark.django_db


def donate(client, **data):
    form = {"frequency": "once", "amount": "1000", "attempt": "", **data}
    return client.post("/donate/", form)


def session_id_of(response) -> str:
    return response["Location"].rsplit("/", 1)[-1]


@pytest.fixture
def paid_donation(client, stripe_api, stripe_webhooks):
    """Donate through the form, pay in Checkout, deliver checkout.session.completed."""

    def pay(**form):
        session = stripe_api.complete_checkout(session_id_of(donate(client, **form)))
        stripe_webhooks.deliver("checkout.session.completed", session)
        return session

    return pay


def test_the_donate_page_offers_presets_custom_amounts_and_monthly(client, stripe_api):
    page = client.get("/donate/").content.decode()
    for label in ("$5.00", "$10.00", "$25.00", "$50.00", "Other amount", "Monthly"):
        assert label in page
    assert page.count("Other amount") == 1
    assert 'name="message"' in page


@pytest.mark.parametrize("method", ["get", "post"])
def test_without_stripe_the_donate_page_offers_the_publications_support_links(client, method):
    from publication.models import Publication

    publication = Publication.load()
    publication.kofi_url = "https://ko-fi.com/meridian"
    publication.buymeacoffee_url = "https://buymeacoffee.com/meridian"
    publication.save()

    response = getattr(client, method)("/donate/", {"amount": "1000", "frequency": "once"})

    assert response.status_code == 200
    page = response.content.decode()
    assert 'href="https://ko-fi.com/meridian"' in page
    assert 'href="https://buymeacoffee.com/meridian"' in page
    assert "Continue to payment" not in page
    assert not Donation.objects.exists()


def test_without_stripe_or_support_links_the_donate_page_says_donations_are_not_open(client):
    response = client.get("/donate/")

    assert response.status_code == 200
    assert "Donations are not open yet" in response.content.decode()
    assert 'name="custom_amount"' not in response.content.decode()


def test_a_one_off_donation_opens_checkout_in_payment_mode(client, stripe_api):
    response = donate(client, amount="2500", message="Keep going!", email="fan@example.com")

    assert response.status_code == 303
    [request] = stripe_api.requests_to("POST", "/v1/checkout/sessions")
    params = request.params
    donation = Donation.objects.get()
    assert params["mode"] == "payment"
    assert params["submit_type"] == "donate"
    assert params["customer_email"] == "fan@example.com"
    [item] = params["line_items"]
    assert item["price_data"]["unit_amount"] == "2500"
    assert item["price_data"]["currency"] == "usd"
    assert "recurring" not in item["price_data"]
    assert params["metadata"] == {
        "broadside_purpose": "donation",
        "donation_id": str(donation.pk),
        "message": "Keep going!",
    }
    assert request.idempotency_key
    assert donation.status == Donation.Status.PENDING
    assert donation.amount == 2500
    assert donation.stripe_checkout_session_id == session_id_of(response)


def test_a_monthly_donation_opens_checkout_in_subscription_mode(client, stripe_api):
    response = donate(client, frequency="monthly", amount="custom", custom_amount="7.50")

    assert response.status_code == 303
    [request] = stripe_api.requests_to("POST", "/v1/checkout/sessions")
    params = request.params
    assert params["mode"] == "subscription"
    [item] = params["line_items"]
    assert item["price_data"]["unit_amount"] == "750"
    assert item["price_data"]["recurring"] == {"interval": "month"}
    assert params["subscription_data"]["metadata"]["broadside_purpose"] == "donation"
    assert Donation.objects.get().recurring is True


@pytest.mark.parametrize(
    ("custom", "error"),
    [
        ("0.50", "The smallest donation is 1.00."),
        ("20000", "The largest donation we take online is 10,000.00."),
        ("ten", "Enter the amount as a number"),
        ("5.555", "at most two decimals"),
        ("", "Choose an amount, or enter your own."),
        ("NaN", "at most two decimals"),
        ("1e999999999", "Enter the amount as a number"),
    ],
)
def test_a_bad_custom_amount_gets_a_clear_error_and_no_checkout(client, stripe_api, custom, error):
    response = donate(client, amount="custom", custom_amount=custom)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert stripe_api.requests_to("POST", "/v1/checkout/sessions") == []
    assert not Donation.objects.exists()


def test_a_too_long_message_is_refused(client, stripe_api):
    response = donate(client, message="x" * 501)
    assert response.status_code == 400
    assert "under 500 characters" in response.content.decode()
    assert not Donation.objects.exists()


def test_a_paid_one_off_donation_is_recorded_and_thanked_once(client, stripe_api, stripe_webhooks):
    response = donate(client, amount="2500", message="For the Balkans coverage")
    session = stripe_api.complete_checkout(session_id_of(response), email="donor@example.com")
    event = stripe_api.event("checkout.session.completed", session)
    stripe_webhooks.send(event)
    # Redelivered, and delivered again under a new event id (as Stripe may):
    stripe_webhooks.send(event)
    again = stripe_api.event("checkout.session.completed", session)
    stripe_webhooks.send(again)

    donation = Donation.objects.get()
    assert donation.status == Donation.Status.PAID
    assert donation.email == "donor@example.com"
    assert donation.amount == 2500
    assert donation.recurring is False
    assert donation.stripe_payment_intent_id == session["payment_intent"]
    assert donation.subscriber is None  # donors need not be subscribers
    assert donation.thanked_at is not None
    assert len(mail.outbox) == 1
    thanks = mail.outbox[0]
    assert thanks.to == ["donor@example.com"]
    assert "$25.00" in thanks.body
    assert "For the Balkans coverage" in thanks.body
    assert "For the Balkans coverage" in thanks.alternatives[0][0]
    assert not Membership.objects.exists()


@pytest.mark.parametrize("status", ["bounced", "complained"])
def test_a_donation_from_a_bounced_or_complained_address_is_recorded_but_not_thanked(
    client, stripe_api, stripe_webhooks, status
):
    SubscriberFactory(email="Donor@example.com", status=status)
    session = stripe_api.complete_checkout(
        session_id_of(donate(client, amount="2500")), email="donor@example.com"
    )
    stripe_webhooks.deliver("checkout.session.completed", session)

    donation = Donation.objects.get()
    assert donation.status == Donation.Status.PAID
    assert donation.thanked_at is None
    assert mail.outbox == []


def test_a_donation_by_a_known_reader_is_linked_to_them(client, stripe_api, stripe_webhooks):
    user = UserFactory(email="reader@example.com")
    subscriber = SubscriberFactory(email=user.email, user=user)
    client.force_login(user)
    response = donate(client, amount="500")
    assert stripe_api.requests_to("POST", "/v1/checkout/sessions")[0].params["metadata"][
        "subscriber_id"
    ] == str(subscriber.pk)
    session = stripe_api.complete_checkout(session_id_of(response))
    stripe_webhooks.deliver("checkout.session.completed", session)
    donation = Donation.objects.get()
    assert donation.subscriber == subscriber
    assert donation.email == "reader@example.com"


def test_monthly_support_is_recorded_and_each_renewal_adds_a_donation(
    client, stripe_api, stripe_webhooks
):
    response = donate(client, frequency="monthly", amount="1000", email="monthly@example.com")
    session = stripe_api.complete_checkout(session_id_of(response))
    subscription = stripe_api.get("subscription", session["subscription"])
    for event in (
        stripe_api.event("customer.subscription.created", subscription),
        stripe_api.event("invoice.paid", stripe_api.get("invoice", session["invoice"])),
        stripe_api.event("checkout.session.completed", session),
    ):
        stripe_webhooks.send(event)

    first = Donation.objects.get()
    assert first.recurring is True
    assert first.status == Donation.Status.PAID
    assert first.stripe_subscription_id == subscription["id"]
    assert first.stripe_invoice_id == session["invoice"]
    assert len(mail.outbox) == 1
    assert "a month" in mail.outbox[0].body
    assert not Membership.objects.exists()  # support is not a paid membership

    renewal = stripe_api.renew_subscription(subscription["id"])
    event = stripe_api.event("invoice.paid", renewal)
    stripe_webhooks.send(event)
    stripe_webhooks.send(event)

    assert Donation.objects.count() == 2
    second = Donation.objects.exclude(pk=first.pk).get()
    assert second.amount == 1000
    assert second.stripe_invoice_id == renewal["id"]
    assert second.status == Donation.Status.PAID
    assert len(mail.outbox) == 1  # thanked once, for the first month


def test_a_refund_marks_the_donation_refunded(stripe_api, paid_donation, stripe_webhooks):
    session = paid_donation(amount="5000")
    charge = stripe_api.refund_charge(payment_intent=session["payment_intent"])
    stripe_webhooks.deliver("charge.refunded", charge)
    donation = Donation.objects.get()
    assert donation.status == Donation.Status.REFUNDED
    assert donation.amount_refunded == 5000


def test_a_partial_refund_leaves_the_donation_paid(paid_donation, stripe_webhooks):
    session = paid_donation(amount="5000")
    charge = {
        "id": "ch_partial",
        "object": "charge",
        "payment_intent": session["payment_intent"],
        "amount": 5000,
        "amount_refunded": 1000,
        "refunded": False,
    }
    later = {**charge, "amount_refunded": 3000}
    # The second refund's event arrives first, then the first's, then a duplicate.
    for snapshot in (later, charge, later):
        stripe_webhooks.deliver("charge.refunded", snapshot)
    donation = Donation.objects.get()
    assert donation.status == Donation.Status.PAID
    assert donation.amount_refunded == 3000
    summary = revenue.revenue_summary()
    assert summary.donations_this_month == {"usd": 2000}
    assert summary.donation_count_this_month == 1


def test_a_dispute_flags_the_event_and_tells_the_editors(
    stripe_api, paid_donation, stripe_webhooks
):
    StaffUserFactory(email="editor@example.com")
    session = paid_donation(amount="5000", email="angry@example.com")
    mail.outbox.clear()
    dispute = {
        "id": "du_1",
        "object": "dispute",
        "charge": "ch_x",
        "payment_intent": session["payment_intent"],
        "amount": 5000,
        "currency": "usd",
        "reason": "fraudulent",
        "status": "needs_response",
    }
    event = stripe_api.event("charge.dispute.created", dispute)
    stripe_webhooks.send(event)

    assert Donation.objects.get().status == Donation.Status.DISPUTED
    stored = StripeEvent.objects.get(stripe_id=event["id"])
    assert stored.needs_attention is True
    assert [m.to for m in mail.outbox] == [["editor@example.com"]]
    assert "fraudulent" in mail.outbox[0].body
    assert f"/admin/subscriptions/stripeevent/{stored.pk}/change/" in mail.outbox[0].body


def test_a_payment_link_donation_without_our_metadata_is_recorded(settings, stripe_webhooks):
    session = {
        "id": "cs_from_payment_link",
        "object": "checkout.session",
        "mode": "payment",
        "status": "complete",
        "payment_status": "paid",
        "amount_total": 300,
        "currency": "usd",
        "customer": None,
        "customer_details": {"email": "coffee@example.com"},
        "payment_intent": "pi_link",
        "metadata": {},
    }
    settings.STRIPE_SECRET_KEY = ""  # Stripe cannot be re-read: the snapshot is used
    stripe_webhooks.deliver("checkout.session.completed", session)
    donation = Donation.objects.get()
    assert donation.amount == 300
    assert donation.email == "coffee@example.com"
    assert donation.status == Donation.Status.PAID
    assert len(mail.outbox) == 1


def test_an_unpaid_session_records_nothing(client, stripe_api, stripe_webhooks):
    response = donate(client, amount="1000")
    session = stripe_api.get("checkout.session", session_id_of(response))  # still open
    stripe_webhooks.deliver("checkout.session.completed", session)
    assert Donation.objects.get().status == Donation.Status.PENDING
    assert mail.outbox == []


def test_a_typed_amount_wins_over_the_preselected_preset(client, stripe_api):
    response = donate(client, amount="1000", custom_amount="15")
    assert response.status_code == 303
    [request] = stripe_api.requests_to("POST", "/v1/checkout/sessions")
    assert request.params["line_items"][0]["price_data"]["unit_amount"] == "1500"


def test_a_mail_server_that_refuses_the_thanks_does_not_undo_the_donation(
    client, stripe_api, settings, stripe_webhooks
):
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    response = donate(client, amount="2500", email="donor@example.com")
    session = stripe_api.complete_checkout(session_id_of(response))
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", port, 2
    event = stripe_api.event("checkout.session.completed", session)

    stripe_webhooks.send(event)

    donation = Donation.objects.get()
    assert donation.status == Donation.Status.PAID
    assert donation.thanked_at is not None  # not retried: a thank-you never goes twice
    stored = StripeEvent.objects.get(stripe_id=event["id"])
    assert stored.processed_at is not None
    assert stored.error == ""


@pytest.mark.parametrize("invoice_first", [False, True])
def test_a_refund_of_the_first_month_of_monthly_support_is_recorded(
    client, stripe_api, stripe_webhooks, invoice_first
):
    response = donate(client, frequency="monthly", amount="1000", email="monthly@example.com")
    session = stripe_api.complete_checkout(session_id_of(response))
    invoice = stripe_api.get("invoice", session["invoice"])
    events = [
        stripe_api.event("checkout.session.completed", session),
        stripe_api.event("invoice.paid", invoice),
    ]
    for event in reversed(events) if invoice_first else events:
        stripe_webhooks.send(event)

    intent = invoice["payments"]["data"][0]["payment"]["payment_intent"]
    charge = stripe_api.refund_charge(payment_intent=intent)
    stripe_webhooks.deliver("charge.refunded", charge)

    donation = Donation.objects.get()
    assert donation.stripe_payment_intent_id == intent
    assert donation.status == Donation.Status.REFUNDED


def test_a_month_of_support_that_cost_nothing_records_no_donation(
    stripe_api, paid_donation, stripe_webhooks
):
    session = paid_donation(frequency="monthly", amount="1000", email="coupon@example.com")
    free_month = {**stripe_api.renew_subscription(session["subscription"]), "amount_paid": 0}
    event = stripe_api.event("invoice.paid", free_month)

    stripe_webhooks.send(event)

    assert Donation.objects.count() == 1
    assert StripeEvent.objects.get(stripe_id=event["id"]).processed_at is not None


def test_an_abandoned_checkout_leaves_no_pending_donation(
    client, stripe_api, paid_donation, stripe_webhooks
):
    paid_donation(amount="1000", email="paid@example.com")
    abandoned = session_id_of(donate(client, amount="2500", email="left@example.com"))
    expired = {**stripe_api.get("checkout.session", abandoned), "status": "expired"}

    stripe_webhooks.deliver("checkout.session.expired", expired)

    donation = Donation.objects.get()
    assert donation.email == "paid@example.com"
    assert donation.status == Donation.Status.PAID


def test_an_account_is_kept_while_its_monthly_donation_bills_and_a_later_month_is_anonymous(
    client, stripe_api, stripe_webhooks
):
    from allauth.account.models import EmailAddress

    response = donate(client, frequency="monthly", amount="1000", email="monthly@example.com")
    session = stripe_api.complete_checkout(session_id_of(response))
    subscription = stripe_api.get("subscription", session["subscription"])
    for event in (
        stripe_api.event("customer.subscription.created", subscription),
        stripe_api.event("invoice.paid", stripe_api.get("invoice", session["invoice"])),
        stripe_api.event("checkout.session.completed", session),
    ):
        stripe_webhooks.send(event)
    donor = UserFactory(email="monthly@example.com")
    EmailAddress.objects.create(user=donor, email=donor.email, verified=True, primary=True)
    client.force_login(donor)

    response = client.post("/account/delete/", {"confirm": "on"}, follow=True)

    assert b"monthly donation that still renews" in response.content
    assert b"Manage billing" in response.content
    assert get_user_model().objects.filter(pk=donor.pk).exists()

    # Stopped in the billing portal (at the period's end, Stripe's default): erasable.
    stripe_api.update_subscription(subscription["id"], cancel_at_period_end=True)
    client.post("/account/delete/", {"confirm": "on"})
    assert not get_user_model().objects.filter(pk=donor.pk).exists()

    # Should Stripe bill it once more after all, the money is recorded, the address not.
    renewal = stripe_api.renew_subscription(subscription["id"])
    assert renewal["customer_email"] == "monthly@example.com"
    stripe_webhooks.send(stripe_api.event("invoice.paid", renewal))

    later = Donation.objects.get(stripe_invoice_id=renewal["id"])
    assert (later.amount, later.status, later.recurring) == (1000, Donation.Status.PAID, True)
    assert (later.email, later.subscriber) == ("", None)
    assert not Donation.objects.filter(email__icontains="monthly@").exists()
