"""Free trials and offers, driven through /upgrade/ and Stripe's signed webhooks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from subscriptions.models import Membership, Offer, Plan, StripeEvent, Subscriber
from subscriptions.services import access, offers, revenue
from tests.factories import PlanFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def trial_plan(stripe_api):
    price = stripe_api.add_price(unit_amount=1000, interval="month")
    return PlanFactory(name="Monthly", amount=1000, stripe_price_id=price["id"], trial_days=7)


def checkout(client, data) -> str:
    response = client.post("/upgrade/", data)
    assert response.status_code == 303, response.content.decode()[:2000]
    return response["Location"].rsplit("/", 1)[-1]


def pay(stripe_api, stripe_webhooks, session_id):
    session = stripe_api.complete_checkout(session_id)
    stripe_webhooks.deliver("checkout.session.completed", session)
    return stripe_api.subscription(session["subscription"])


def signed_in(client, email):
    user = UserFactory(email=email)
    client.force_login(user)
    return user


# --- Trials ------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["paid", "failed", "canceled"])
def test_a_trial_reader_is_paid_reminded_once_then_charged_or_lapsed(
    client, stripe_api, stripe_webhooks, trial_plan, outcome
):
    signed_in(client, "trial@example.com")
    session_id = checkout(client, {"plan": trial_plan.pk})
    sent = stripe_api.requests_to("POST", "/v1/checkout/sessions")[-1].params
    assert sent["subscription_data"]["trial_period_days"] == "7"

    subscription = pay(stripe_api, stripe_webhooks, session_id)
    reader = Subscriber.objects.get(email="trial@example.com")
    membership = Membership.objects.get(subscriber=reader)
    assert membership.status == Membership.Status.TRIALING
    assert membership.trial_end is not None
    assert membership.trial_end - timezone.now() > timedelta(days=6)
    assert access.subscriber_is_paid(subscriber=reader)

    # Three days before the end, Stripe warns; the reader is told once, even when
    # Stripe delivers the warning twice.
    mail.outbox.clear()
    warning = stripe_api.event("customer.subscription.trial_will_end", subscription)
    assert stripe_webhooks.send(warning).status_code == 200
    assert stripe_webhooks.send(warning).status_code == 200
    stripe_webhooks.deliver("customer.subscription.trial_will_end", subscription)
    (reminder,) = mail.outbox
    assert reminder.to == ["trial@example.com"]
    assert reminder.subject == "Your free trial ends soon"
    assert "$10.00" in reminder.body
    assert membership.trial_end.strftime("%-d %B %Y") in reminder.body
    assert StripeEvent.objects.filter(type="customer.subscription.trial_will_end").count() == 2

    result = stripe_api.end_trial(subscription["id"], outcome=outcome)
    if outcome == "canceled":
        stripe_webhooks.deliver("customer.subscription.deleted", result)
    else:
        stripe_webhooks.deliver(
            "invoice.paid" if outcome == "paid" else "invoice.payment_failed", result
        )
        assert result["amount_due"] == 1000
    membership.refresh_from_db()
    expected = {"paid": "active", "failed": "past_due", "canceled": "canceled"}[outcome]
    assert membership.status == expected
    # A failed first charge keeps the grace of any failed renewal; a canceled trial ends.
    assert access.subscriber_is_paid(subscriber=reader) is (outcome != "canceled")
    summary = revenue.revenue_summary()
    assert summary.trials_started_this_month == 1
    assert summary.trials_converted_this_month == (1 if outcome == "paid" else 0)
    assert summary.trials_lapsed_this_month == (1 if outcome == "canceled" else 0)
    # A past-due member counts in MRR while Stripe retries, as for any renewal.
    assert summary.mrr == ({} if outcome == "canceled" else {"usd": 1000})


def test_one_trial_per_reader(client, stripe_api, stripe_webhooks, trial_plan):
    signed_in(client, "again@example.com")
    subscription = pay(stripe_api, stripe_webhooks, checkout(client, {"plan": trial_plan.pk}))
    canceled = stripe_api.end_trial(subscription["id"], outcome="canceled")
    stripe_webhooks.deliver("customer.subscription.deleted", canceled)

    checkout(client, {"plan": trial_plan.pk})
    sent = stripe_api.requests_to("POST", "/v1/checkout/sessions")[-1].params
    assert "trial_period_days" not in sent.get("subscription_data", {})

    # Another reader still gets theirs.
    client.logout()
    signed_in(client, "first-time@example.com")
    checkout(client, {"plan": trial_plan.pk})
    sent = stripe_api.requests_to("POST", "/v1/checkout/sessions")[-1].params
    assert sent["subscription_data"]["trial_period_days"] == "7"


def test_a_trial_reminder_for_a_subscription_no_longer_in_trial_sends_nothing(
    client, stripe_api, stripe_webhooks, trial_plan
):
    signed_in(client, "early@example.com")
    subscription = pay(stripe_api, stripe_webhooks, checkout(client, {"plan": trial_plan.pk}))
    invoice = stripe_api.end_trial(subscription["id"], outcome="paid")
    stripe_webhooks.deliver("invoice.paid", invoice)
    mail.outbox.clear()
    # The warning arrives late, with the old snapshot: Stripe's current state wins.
    stripe_webhooks.deliver("customer.subscription.trial_will_end", subscription)
    assert mail.outbox == []
    assert Membership.objects.get(stripe_subscription_id=subscription["id"]).status == "active"


def test_without_an_api_key_the_trial_warning_is_applied_from_its_snapshot(
    client, stripe_api, stripe_webhooks, trial_plan, settings
):
    signed_in(client, "offline@example.com")
    subscription = pay(stripe_api, stripe_webhooks, checkout(client, {"plan": trial_plan.pk}))
    mail.outbox.clear()
    settings.STRIPE_SECRET_KEY = ""

    stripe_webhooks.deliver("customer.subscription.trial_will_end", subscription)

    event = StripeEvent.objects.get(type="customer.subscription.trial_will_end")
    assert (event.processed_at is not None, event.error) == (True, "")
    (reminder,) = mail.outbox
    assert reminder.to == ["offline@example.com"]
    assert reminder.subject == "Your free trial ends soon"


# --- Offers ------------------------------------------------------------------------


@pytest.fixture
def monthly(stripe_api):
    price = stripe_api.add_price(unit_amount=1000, interval="month")
    return PlanFactory(name="Monthly", amount=1000, stripe_price_id=price["id"])


def make_offer(**fields) -> Offer:
    fields = {"code": "SPRING-25", "name": "Spring offer", **fields}
    offer = Offer.objects.create(**fields)
    return offers.publish_offer(offer=offer)


def test_an_offer_becomes_a_stripe_coupon_and_promotion_code_once(stripe_api, monthly):
    offer = make_offer(
        kind=Offer.Kind.PERCENT,
        percent_off=25,
        duration=Offer.Duration.REPEATING,
        duration_in_months=3,
        max_redemptions=50,
    )
    offers.publish_offer(offer=offer)  # again: nothing new
    (coupon,) = stripe_api.all("coupon")
    (promotion,) = stripe_api.all("promotion_code")
    assert coupon["percent_off"] == 25
    assert coupon["duration"] == "repeating"
    assert coupon["duration_in_months"] == 3
    assert promotion["code"] == "SPRING-25"
    assert promotion["promotion"]["coupon"] == coupon["id"]
    assert promotion["max_redemptions"] == 50
    offer.refresh_from_db()
    assert offer.stripe_coupon_id == coupon["id"]
    assert offer.stripe_promotion_code_id == promotion["id"]


def test_an_offer_link_shows_and_applies_its_discount_and_counts_the_redemption(
    client, stripe_api, stripe_webhooks, monthly
):
    offer = make_offer(
        kind=Offer.Kind.PERCENT,
        percent_off=25,
        duration=Offer.Duration.REPEATING,
        duration_in_months=3,
    )
    page = client.get("/upgrade/?offer=spring-25")
    assert page.status_code == 200
    text = page.content.decode()
    assert "$7.50 instead of $10.00 for 3 months" in text
    assert 'name="offer" value="SPRING-25"' in text

    signed_in(client, "offer@example.com")
    session_id = checkout(client, {"plan": monthly.pk, "offer": "SPRING-25"})
    sent = stripe_api.requests_to("POST", "/v1/checkout/sessions")[-1].params
    assert sent["discounts"] == [{"promotion_code": offer.stripe_promotion_code_id}]
    assert "allow_promotion_codes" not in sent
    assert stripe_api.get("checkout.session", session_id)["amount_total"] == 750

    subscription = pay(stripe_api, stripe_webhooks, session_id)
    stripe_webhooks.deliver("customer.subscription.created", subscription)
    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert membership.offer == offer
    assert membership.discount_percent_off == 25
    assert membership.discount_ends_at is not None
    assert offers.redemptions(offer=offer) == 1
    assert stripe_api.get("promotion_code", offer.stripe_promotion_code_id)["times_redeemed"] == 1
    # MRR counts what the reader pays now, and the full price once the discount ends.
    assert revenue.revenue_summary().mrr == {"usd": 750}
    later = membership.discount_ends_at + timedelta(days=1)
    Membership.objects.filter(pk=membership.pk).update(current_period_end=later + timedelta(9))
    assert revenue.revenue_summary(now=later).mrr == {"usd": 1000}
    (row,) = revenue.revenue_summary().offers
    assert row["offer"] == offer and row["redemptions"] == 1 and row["paying"] == 1


def test_without_an_offer_checkout_still_takes_typed_promotion_codes(client, stripe_api, monthly):
    signed_in(client, "plain@example.com")
    checkout(client, {"plan": monthly.pk})
    sent = stripe_api.requests_to("POST", "/v1/checkout/sessions")[-1].params
    assert sent["allow_promotion_codes"] == "true"
    assert "discounts" not in sent


@pytest.mark.parametrize("why", ["ended", "used up", "inactive"])
def test_an_ended_or_used_up_offer_says_so_and_refuses_checkout(
    client, stripe_api, stripe_webhooks, monthly, why
):
    fields: dict = {"kind": Offer.Kind.AMOUNT, "amount_off": 300}
    if why == "used up":
        fields["max_redemptions"] = 1
    offer = make_offer(**fields)
    if why == "used up":
        signed_in(client, "first@example.com")
        pay(
            stripe_api, stripe_webhooks, checkout(client, {"plan": monthly.pk, "offer": offer.code})
        )
        client.logout()
    elif why == "ended":
        Offer.objects.filter(pk=offer.pk).update(ends_at=timezone.now() - timedelta(minutes=1))
    else:
        offers.end_offer(offer=offer)
        assert stripe_api.get("promotion_code", offer.stripe_promotion_code_id)["active"] is False

    page = client.get(f"/upgrade/?offer={offer.code}")
    assert page.status_code == 200
    text = page.content.decode()
    assert ("has been used up" if why == "used up" else "has ended") in text
    assert 'name="offer"' not in text

    signed_in(client, "late@example.com")
    before = len(stripe_api.requests_to("POST", "/v1/checkout/sessions"))
    response = client.post("/upgrade/", {"plan": monthly.pk, "offer": offer.code})
    assert response.status_code == 400
    assert len(stripe_api.requests_to("POST", "/v1/checkout/sessions")) == before


def test_an_unknown_offer_code_is_refused(client, monthly):
    page = client.get("/upgrade/?offer=NOPE")
    assert "This offer does not exist" in page.content.decode()


def test_a_trial_offer_gives_its_days_and_an_amount_offer_its_price(client, stripe_api, monthly):
    make_offer(code="TRY-30", kind=Offer.Kind.TRIAL, trial_days=30)
    assert "30 days free, then $10.00" in client.get("/upgrade/?offer=TRY-30").content.decode()
    signed_in(client, "longtrial@example.com")
    checkout(client, {"plan": monthly.pk, "offer": "TRY-30"})
    sent = stripe_api.requests_to("POST", "/v1/checkout/sessions")[-1].params
    assert sent["subscription_data"]["trial_period_days"] == "30"
    assert sent["subscription_data"]["metadata"]["offer_id"]
    assert stripe_api.all("coupon") == []


def test_an_offer_for_one_plan_is_not_applied_to_another(client, stripe_api, monthly):
    yearly_price = stripe_api.add_price(unit_amount=10000, interval="year")
    yearly = PlanFactory(
        name="Yearly", amount=10000, interval="year", stripe_price_id=yearly_price["id"]
    )
    make_offer(kind=Offer.Kind.PERCENT, percent_off=10, plan=yearly)
    page = client.get("/upgrade/?offer=SPRING-25").content.decode()
    assert "Yearly" in page and f'value="{monthly.pk}"' not in page
    signed_in(client, "wrongplan@example.com")
    response = client.post("/upgrade/", {"plan": monthly.pk, "offer": "SPRING-25"})
    assert response.status_code == 400
    assert "not for the Monthly plan" in response.content.decode()


@pytest.mark.parametrize("code", ["", "A", "has space", "ÜBER", "x" * 41, "-LEAD"])
def test_offer_codes_people_type_are_checked(code):
    with pytest.raises(offers.OfferError):
        offers.validate_code(code)


def test_offer_prices_are_what_stripe_bills():
    offer = Offer(kind=Offer.Kind.PERCENT, percent_off=33, duration=Offer.Duration.ONCE)
    assert offers.offer_price(offer=offer, amount=999).first == 999 - round(999 * 0.33)
    offer = Offer(kind=Offer.Kind.AMOUNT, amount_off=2000, duration=Offer.Duration.FOREVER)
    assert offers.offer_price(offer=offer, amount=1000).first == 0
    assert offers.offer_price(offer=offer, amount=5000).first == 3000


def test_a_promotion_code_deactivated_in_stripe_ends_the_offer(
    stripe_api, stripe_webhooks, monthly
):
    offer = make_offer(kind=Offer.Kind.PERCENT, percent_off=10)
    other = make_offer(code="OTHER", kind=Offer.Kind.PERCENT, percent_off=20)
    stripe_api.set_promotion_code(offer.stripe_promotion_code_id, active=False)
    stripe_webhooks.deliver(
        "promotion_code.updated", stripe_api.get("promotion_code", offer.stripe_promotion_code_id)
    )
    offer.refresh_from_db()
    other.refresh_from_db()
    assert offer.active is False
    assert other.active is True


def test_a_promotion_code_event_is_applied_as_stripe_has_the_code_now(
    stripe_api, stripe_webhooks, monthly
):
    offer = make_offer(kind=Offer.Kind.PERCENT, percent_off=10)
    still_active = stripe_api.get("promotion_code", offer.stripe_promotion_code_id)
    stripe_api.set_promotion_code(offer.stripe_promotion_code_id, active=False)

    # The event's snapshot is older than the deactivation: Stripe's current state wins.
    stripe_webhooks.deliver("promotion_code.updated", still_active)

    offer.refresh_from_db()
    assert offer.active is False


def test_without_an_api_key_a_promotion_code_event_is_applied_from_its_snapshot(
    stripe_api, stripe_webhooks, monthly, settings
):
    offer = make_offer(kind=Offer.Kind.PERCENT, percent_off=10)
    deactivated = stripe_api.set_promotion_code(offer.stripe_promotion_code_id, active=False)
    settings.STRIPE_SECRET_KEY = ""

    stripe_webhooks.deliver("promotion_code.updated", deactivated)

    assert StripeEvent.objects.get(type="promotion_code.updated").processed_at is not None
    offer.refresh_from_db()
    assert offer.active is False


# --- Founding members --------------------------------------------------------------


def test_a_founding_member_pays_what_they_choose_above_the_minimum(
    client, stripe_api, stripe_webhooks
):
    product = stripe_api.add_product(name="Membership")
    price = stripe_api.add_price(unit_amount=15000, interval="year", product=product["id"])
    founding = PlanFactory(
        name="Founding",
        amount=15000,
        interval="year",
        kind=Plan.Kind.FOUNDING,
        stripe_price_id=price["id"],
        stripe_product_id=product["id"],
    )
    signed_in(client, "founder@example.com")
    too_little = client.post("/upgrade/", {"plan": founding.pk, "founding_amount": "100"})
    assert too_little.status_code == 400
    assert "at least $150.00 a year" in too_little.content.decode()

    session_id = checkout(client, {"plan": founding.pk, "founding_amount": "250"})
    line = stripe_api.get("checkout.session", session_id)["_line_items"][0]
    assert line["price"]["unit_amount"] == 25000
    assert line["price"]["product"] == product["id"]
    subscription = pay(stripe_api, stripe_webhooks, session_id)
    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert membership.plan == founding
    assert membership.foreign_price is False
    assert access.subscriber_is_paid(subscriber=membership.subscriber)
    summary = revenue.revenue_summary()
    assert summary.founding_members == 1
    assert summary.founding_revenue_yearly == {"usd": 25000}
    assert summary.mrr == {"usd": round(25000 / 12)}


@pytest.mark.parametrize("stripe_kind", ["trial", "amount"])
def test_a_capped_offer_cannot_be_started_more_times_than_its_cap_until_a_checkout_expires(
    client, stripe_api, stripe_webhooks, monthly, stripe_kind
):
    from django.test import Client

    from subscriptions.models import OfferReservation

    fields: dict = (
        {"kind": Offer.Kind.TRIAL, "trial_days": 30}
        if stripe_kind == "trial"
        else {"kind": Offer.Kind.AMOUNT, "amount_off": 300}
    )
    offer = make_offer(code="ONE-ONLY", max_redemptions=1, **fields)
    signed_in(client, "first@example.com")
    first_session = checkout(client, {"plan": monthly.pk, "offer": offer.code})

    second = Client()
    signed_in(second, "second@example.com")
    before = len(stripe_api.requests_to("POST", "/v1/checkout/sessions"))
    refused = second.post("/upgrade/", {"plan": monthly.pk, "offer": offer.code})
    assert refused.status_code == 400
    assert "has been used up" in refused.content.decode()
    assert len(stripe_api.requests_to("POST", "/v1/checkout/sessions")) == before

    # The first reader walks away: Stripe expires the session and the place is free.
    expired = {**stripe_api.get("checkout.session", first_session), "status": "expired"}
    stripe_webhooks.deliver("checkout.session.expired", expired)
    second_session = checkout(second, {"plan": monthly.pk, "offer": offer.code})
    pay(stripe_api, stripe_webhooks, second_session)
    assert offers.redemptions(offer=offer) == 1
    assert not OfferReservation.objects.filter(released_at__isnull=True).exists()

    # Used once: a third reader is refused.
    third = Client()
    signed_in(third, "third@example.com")
    assert third.post("/upgrade/", {"plan": monthly.pk, "offer": offer.code}).status_code == 400


def test_a_failed_checkout_gives_the_offer_place_back(client, stripe_api, monthly, settings):
    from subscriptions.models import OfferReservation

    offer = make_offer(code="TRY-ONCE", kind=Offer.Kind.TRIAL, trial_days=30, max_redemptions=1)
    signed_in(client, "unlucky@example.com")
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # Stripe out of reach
    client.post("/upgrade/", {"plan": monthly.pk, "offer": offer.code})
    assert offers.places_taken(offer=offer) == 0
    assert OfferReservation.objects.get().released_at is not None


@pytest.fixture
def founding_plan(stripe_api):
    product = stripe_api.add_product(name="Membership")
    price = stripe_api.add_price(unit_amount=15000, interval="year", product=product["id"])
    return PlanFactory(
        name="Founding",
        amount=15000,
        interval="year",
        kind=Plan.Kind.FOUNDING,
        stripe_price_id=price["id"],
        stripe_product_id=product["id"],
    )


@pytest.mark.parametrize("typed", ["-5", "0", "-0.01"])
def test_a_founding_amount_of_zero_or_less_is_told_the_minimum(client, founding_plan, typed):
    signed_in(client, "founder@example.com")
    refused = client.post("/upgrade/", {"plan": founding_plan.pk, "founding_amount": typed})
    assert refused.status_code == 400
    text = refused.content.decode()
    assert "at least $150.00 a year" in text
    assert "at most two decimals" not in text


def test_an_offer_for_no_plan_does_not_take_a_founding_plan_below_its_minimum(
    client, stripe_api, monthly, founding_plan
):
    make_offer(code="ANY-50", kind=Offer.Kind.PERCENT, percent_off=50)
    signed_in(client, "founder@example.com")
    before = len(stripe_api.requests_to("POST", "/v1/checkout/sessions"))
    refused = client.post("/upgrade/", {"plan": founding_plan.pk, "offer": "ANY-50"})
    assert refused.status_code == 400
    assert "is not for the Founding plan" in refused.content.decode()
    assert len(stripe_api.requests_to("POST", "/v1/checkout/sessions")) == before
    # Nor can the code be typed at Checkout.
    checkout(client, {"plan": founding_plan.pk})
    sent = stripe_api.requests_to("POST", "/v1/checkout/sessions")[-1].params
    assert "allow_promotion_codes" not in sent and "discounts" not in sent
    # It still applies to an individual plan.
    checkout(client, {"plan": monthly.pk, "offer": "ANY-50"})
    sent = stripe_api.requests_to("POST", "/v1/checkout/sessions")[-1].params
    assert "discounts" in sent


def test_an_offer_naming_the_founding_plan_applies_to_it(client, stripe_api, founding_plan):
    offer = make_offer(
        code="FOUNDER-10", kind=Offer.Kind.PERCENT, percent_off=10, plan=founding_plan
    )
    signed_in(client, "founder@example.com")
    checkout(client, {"plan": founding_plan.pk, "offer": "FOUNDER-10"})
    sent = stripe_api.requests_to("POST", "/v1/checkout/sessions")[-1].params
    assert sent["discounts"] == [{"promotion_code": offer.stripe_promotion_code_id}]
