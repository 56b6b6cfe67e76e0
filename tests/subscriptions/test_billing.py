"""The upgrade page, Checkout and Customer Portal sessions, and plan sync with Stripe."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from subscriptions.models import Membership, Plan, Subscriber
from tests.factories import MembershipFactory, PlanFactory, SubscriberFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def plans(stripe_api):
    monthly = stripe_api.add_price(unit_amount=800, interval="month")
    yearly = stripe_api.add_price(unit_amount=8000, interval="year")
    return (
        PlanFactory(name="Monthly", amount=800, stripe_price_id=monthly["id"], position=1),
        PlanFactory(
            name="Yearly",
            amount=8000,
            interval=Plan.Interval.YEAR,
            stripe_price_id=yearly["id"],
            position=2,
        ),
    )


def checkout_requests(stripe_api):
    return stripe_api.requests_to("POST", "/v1/checkout/sessions")


def test_the_upgrade_page_lists_active_plans_with_prices(client, plans):
    PlanFactory(name="Retired", amount=500, active=False)
    page = client.get("/upgrade/").content.decode()
    assert "Monthly" in page and "$8.00 a month" in page
    assert "Yearly" in page and "$80.00 a year" in page
    assert "Retired" not in page
    assert 'name="email"' in page  # not signed in: asked for an email


def test_a_signed_in_reader_reuses_their_stripe_customer(client, stripe_api, plans):
    _monthly, yearly = plans
    user = UserFactory(email="known@example.com")
    customer = stripe_api.add_customer(email=user.email)
    SubscriberFactory(email=user.email, user=user, stripe_customer_id=customer["id"])
    client.force_login(user)

    response = client.post("/upgrade/", {"plan": yearly.pk})

    assert response.status_code == 303
    assert stripe_api.requests_to("POST", "/v1/customers") == []
    [request] = checkout_requests(stripe_api)
    params = request.params
    subscriber = Subscriber.objects.get(user=user)
    assert params["mode"] == "subscription"
    assert params["customer"] == customer["id"]
    assert params["client_reference_id"] == str(subscriber.pk)
    assert params["metadata"]["subscriber_id"] == str(subscriber.pk)
    assert params["metadata"]["broadside_purpose"] == "membership"
    assert params["subscription_data"]["metadata"]["subscriber_id"] == str(subscriber.pk)
    assert params["line_items"] == [{"price": yearly.stripe_price_id, "quantity": "1"}]
    assert params["success_url"].startswith("http://testserver/upgrade/success/")
    assert "{CHECKOUT_SESSION_ID}" in params["success_url"]
    assert params["cancel_url"] == "http://testserver/upgrade/"
    assert request.idempotency_key
    session = stripe_api.get("checkout.session", response["Location"].rsplit("/", 1)[-1])
    assert response["Location"] == session["url"]
    assert not Membership.objects.exists()  # only the webhook grants access


def test_a_new_visitor_gives_an_email_and_stripe_makes_the_customer_at_payment(
    client, stripe_api, plans
):
    monthly, _ = plans
    first = client.post(
        "/upgrade/", {"plan": monthly.pk, "email": "Visitor@Example.com", "attempt": "a" * 32}
    )
    again = client.post(
        "/upgrade/", {"plan": monthly.pk, "email": "visitor@example.com", "attempt": "b" * 32}
    )
    assert first.status_code == again.status_code == 303
    subscriber = Subscriber.objects.get(email="visitor@example.com")
    assert subscriber.status == Subscriber.Status.PENDING
    assert Subscriber.objects.count() == 1
    # Nobody proved the address yet: Stripe makes the customer when the payment is made,
    # and the webhook ties it to the reader then.
    assert stripe_api.requests_to("POST", "/v1/customers") == []
    assert subscriber.stripe_customer_id is None
    assert len(checkout_requests(stripe_api)) == 2
    for request in checkout_requests(stripe_api):
        assert "customer" not in request.params
        assert request.params["customer_email"] == "visitor@example.com"
        assert request.params["subscription_data"]["metadata"]["subscriber_id"] == str(
            subscriber.pk
        )
    assert mail.outbox == []


def test_a_free_reader_who_upgrades_is_found_among_the_others_and_not_added_again(
    client, stripe_api, plans
):
    """Trying to add a known address again would fail on its unique constraint: an
    error in the database's log for every upgrade by a reader we already have."""
    monthly, _ = plans
    SubscriberFactory(email="before@example.com")
    reader = SubscriberFactory(email="free.reader@example.com", status=Subscriber.Status.ACTIVE)
    SubscriberFactory(email="after@example.com")

    with CaptureQueriesContext(connection) as queries:
        response = client.post(
            "/upgrade/", {"plan": monthly.pk, "email": "Free.Reader@Example.com"}
        )

    assert response.status_code == 303
    [request] = checkout_requests(stripe_api)
    assert request.params["subscription_data"]["metadata"]["subscriber_id"] == str(reader.pk)
    assert Subscriber.objects.count() == 3
    inserts = [
        q["sql"] for q in queries if q["sql"].startswith('INSERT INTO "subscriptions_subscriber"')
    ]
    assert inserts == []


def test_an_anonymous_visitor_using_an_address_with_billing_must_sign_in(client, stripe_api, plans):
    monthly, _ = plans
    customer = stripe_api.add_customer(email="paid.before@example.com")
    SubscriberFactory(email="paid.before@example.com", stripe_customer_id=customer["id"])

    response = client.post("/upgrade/", {"plan": monthly.pk, "email": "paid.before@example.com"})

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert "next=%2Fupgrade%2F" in response["Location"]
    assert checkout_requests(stripe_api) == []

    # A checkout started for an address elsewhere neither blocks nor helps another
    # browser: no customer exists until someone pays.
    client.post("/upgrade/", {"plan": monthly.pk, "email": "fresh@example.com"})
    other_browser = Client()
    response = other_browser.post("/upgrade/", {"plan": monthly.pk, "email": "fresh@example.com"})
    assert response.status_code == 303
    assert [r.params.get("customer") for r in checkout_requests(stripe_api)] == [None, None]


def test_a_double_submitted_form_creates_one_checkout_session(client, stripe_api, plans):
    monthly, _ = plans
    data = {"plan": monthly.pk, "email": "twice@example.com", "attempt": "c" * 32}
    first = client.post("/upgrade/", data)
    second = client.post("/upgrade/", data)
    assert first["Location"] == second["Location"]
    assert len(stripe_api.all("checkout.session")) == 1


def test_an_already_paid_reader_is_sent_to_their_account(client, stripe_api, plans):
    monthly, _ = plans
    user = UserFactory(email="paid@example.com")
    subscriber = SubscriberFactory(email=user.email, user=user)
    MembershipFactory(subscriber=subscriber, plan=monthly)
    client.force_login(user)
    response = client.post("/upgrade/", {"plan": monthly.pk})
    assert response.status_code == 302
    assert response["Location"] == "/account/"
    assert checkout_requests(stripe_api) == []


def test_bad_upgrade_input_gets_clear_errors_and_no_session(client, stripe_api, plans):
    monthly, _ = plans
    retired = PlanFactory(name="Retired", active=False)
    no_email = client.post("/upgrade/", {"plan": monthly.pk})
    assert no_email.status_code == 400
    assert "Enter your email address" in no_email.content.decode()
    bad_plan = client.post("/upgrade/", {"plan": retired.pk, "email": "a@example.com"})
    assert bad_plan.status_code == 400
    assert "Please choose one of the plans shown." in bad_plan.content.decode()
    bad_email = client.post("/upgrade/", {"plan": monthly.pk, "email": "not-an-address"})
    assert bad_email.status_code == 400
    assert checkout_requests(stripe_api) == []
    assert not Subscriber.objects.exists()


@pytest.mark.parametrize("path", ["/upgrade/", "/donate/", "/account/billing/"])
def test_checkout_and_portal_forms_post_only_with_the_pages_csrf_token(stripe_api, plans, path):
    user = UserFactory(email="csrf@example.com")
    customer = stripe_api.add_customer(email=user.email)
    SubscriberFactory(email=user.email, user=user, stripe_customer_id=customer["id"])
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    page = browser.get(path).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    data = {"plan": plans[0].pk, "amount": "1000", "frequency": "once"}

    assert browser.post(path, data).status_code == 403  # a cross-site form
    assert [r for r in stripe_api.requests if r.method == "POST"] == []

    response = browser.post(path, {**data, "csrfmiddlewaretoken": token.group(1)})
    assert response.status_code == 303
    assert response["Location"].startswith(stripe_api.url)


def test_the_billing_portal_opens_for_the_readers_customer(client, stripe_api):
    user = UserFactory(email="billing@example.com")
    customer = stripe_api.add_customer(email=user.email)
    SubscriberFactory(email=user.email, user=user, stripe_customer_id=customer["id"])
    client.force_login(user)

    page = client.get("/account/billing/")
    assert page.status_code == 200
    assert "Manage billing" in page.content.decode()
    assert stripe_api.requests_to("POST", "/v1/billing_portal/sessions") == []  # GET is safe

    response = client.post("/account/billing/")
    assert response.status_code == 303
    [request] = stripe_api.requests_to("POST", "/v1/billing_portal/sessions")
    assert request.params == {
        "customer": customer["id"],
        "return_url": "http://testserver/account/",
    }
    assert response["Location"].startswith(f"{stripe_api.url}/portal/bps_")


def test_the_billing_portal_needs_a_signed_in_reader_with_billing(client, stripe_api):
    response = client.post("/account/billing/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")

    user = UserFactory(email="free@example.com")
    SubscriberFactory(email=user.email, user=user)
    client.force_login(user)
    response = client.post("/account/billing/")
    assert response["Location"] == "/upgrade/"
    assert stripe_api.requests_to("POST", "/v1/billing_portal/sessions") == []


def test_the_success_page_reports_without_granting_access(client, stripe_api, plans):
    monthly, _ = plans
    response = client.post("/upgrade/", {"plan": monthly.pk, "email": "s@example.com"})
    session_id = response["Location"].rsplit("/", 1)[-1]
    stripe_api.complete_checkout(session_id)
    page = client.get(f"/upgrade/success/?session_id={session_id}")
    assert "Your payment went through" in page.content.decode()
    assert not Membership.objects.exists()


def test_sync_stripe_plans_creates_missing_prices_once(stripe_api, capsys):
    monthly = PlanFactory(name="Monthly", amount=700, stripe_price_id=None)
    yearly = PlanFactory(
        name="Yearly", amount=7000, interval=Plan.Interval.YEAR, stripe_price_id=None
    )

    call_command("sync_stripe_plans")
    monthly.refresh_from_db()
    yearly.refresh_from_db()
    assert len(stripe_api.all("product")) == 1
    price = stripe_api.get("price", monthly.stripe_price_id)
    assert price["unit_amount"] == 700 and price["recurring"]["interval"] == "month"
    assert stripe_api.get("price", yearly.stripe_price_id)["recurring"]["interval"] == "year"
    assert monthly.stripe_product_id == yearly.stripe_product_id == price["product"]
    assert all(r.idempotency_key for r in stripe_api.requests_to("POST", "/v1/"))

    call_command("sync_stripe_plans")  # nothing new
    assert len(stripe_api.all("price")) == 2
    assert len(stripe_api.all("product")) == 1
    assert "up to date" in capsys.readouterr().out

    # An edited amount needs a new price (Stripe prices cannot change).
    Plan.objects.filter(pk=monthly.pk).update(amount=900)
    call_command("sync_stripe_plans")
    monthly.refresh_from_db()
    assert stripe_api.get("price", monthly.stripe_price_id)["unit_amount"] == 900
    assert len(stripe_api.all("product")) == 1


def test_sync_stripe_plans_explains_a_missing_key(settings):
    from django.core.management.base import CommandError

    PlanFactory(stripe_price_id=None)
    settings.STRIPE_SECRET_KEY = ""
    with pytest.raises(CommandError, match="STRIPE_SECRET_KEY"):
        call_command("sync_stripe_plans")


def test_a_half_configured_stripe_fails_the_system_check(settings):
    from subscriptions.stripe_client import check_settings

    settings.STRIPE_SECRET_KEY = "sk_test_abc"
    settings.STRIPE_WEBHOOK_SECRET = ""
    assert [m.id for m in check_settings()] == ["subscriptions.E002"]
    settings.STRIPE_WEBHOOK_SECRET = "not-a-secret"
    assert [m.id for m in check_settings()] == ["subscriptions.E003"]
    settings.STRIPE_WEBHOOK_SECRET = "whsec_abc"
    assert check_settings() == []
    settings.STRIPE_SECRET_KEY = ""
    assert [m.id for m in check_settings()] == ["subscriptions.W001"]


def test_a_stranger_cannot_tell_a_paid_address_from_one_with_billing(client, stripe_api, plans):
    monthly, _ = plans
    MembershipFactory(subscriber=SubscriberFactory(email="paid@example.com"), plan=monthly)
    customer = stripe_api.add_customer(email="lapsed@example.com")
    SubscriberFactory(email="lapsed@example.com", stripe_customer_id=customer["id"])

    answers = []
    for email in ("paid@example.com", "lapsed@example.com"):
        response = client.post("/upgrade/", {"plan": monthly.pk, "email": email}, follow=True)
        messages = [str(m) for m in response.context["messages"]]
        answers.append((response.redirect_chain, messages))
    assert answers[0] == answers[1]
    assert checkout_requests(stripe_api) == []


def test_a_complimentary_reader_can_subscribe_before_their_membership_ends(
    client, stripe_api, plans
):
    monthly, _ = plans
    user = UserFactory(email="comp@example.com")
    subscriber = SubscriberFactory(email=user.email, user=user)
    MembershipFactory(
        subscriber=subscriber,
        kind=Membership.Kind.COMP,
        plan=None,
        stripe_subscription_id=None,
        expires_at=timezone.now() + timedelta(days=5),
    )
    client.force_login(user)

    page = client.get("/upgrade/").content.decode()
    assert "You already have a paid subscription" not in page
    assert f'value="{monthly.pk}"' in page
    response = client.post("/upgrade/", {"plan": monthly.pk})

    assert response.status_code == 303
    [request] = checkout_requests(stripe_api)
    assert request.params["metadata"]["subscriber_id"] == str(subscriber.pk)


def test_the_success_page_asks_stripe_a_limited_number_of_times_per_client(
    client, stripe_api, plans
):
    monthly, _ = plans
    response = client.post("/upgrade/", {"plan": monthly.pk, "email": "s@example.com"})
    session_id = response["Location"].rsplit("/", 1)[-1]
    for _ in range(25):
        page = client.get(f"/upgrade/success/?session_id={session_id}")
        assert page.status_code == 200
    assert len(stripe_api.requests_to("GET", "/v1/checkout/sessions/")) == 20


def test_the_upgrade_limit_counts_an_ipv6_network_as_one_client(client, stripe_api, plans):
    monthly, _ = plans
    answers = [
        client.post(
            "/upgrade/",
            {"plan": monthly.pk, "email": f"r{n}@example.com"},
            REMOTE_ADDR=f"2001:db8:1:2::{n:x}",
        ).status_code
        for n in range(1, 23)
    ]
    assert answers[:20] == [303] * 20
    assert answers[20:] == [429, 429]
