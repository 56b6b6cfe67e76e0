"""A stranger who types someone's address at /upgrade/ can neither block nor take their checkout.

Driven end to end: the Django test client for browsers, the Stripe stand-in
(tests/fakes/stripe_api.py) through stripe-python, webhooks signed as Stripe signs them.
"""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client

from subscriptions.models import Membership, Subscriber
from subscriptions.services.access import user_is_paid
from tests.factories import PlanFactory

pytestmark = pytest.mark.django_db

OWNER = "new.reader@example.com"
CODE_RE = re.compile(r"^\s*([A-Z0-9]{4}-[A-Z0-9]{4})\s*$", re.MULTILINE)


@pytest.fixture
def plan(stripe_api):
    price = stripe_api.add_price(unit_amount=800, interval="month")
    return PlanFactory(name="Monthly", amount=800, stripe_price_id=price["id"])


def _checkouts(stripe_api):
    return stripe_api.requests_to("POST", "/v1/checkout/sessions")


def _pay(stripe_api, stripe_webhooks, response) -> dict:
    assert response.status_code == 303, response.content.decode()
    session = stripe_api.complete_checkout(response["Location"].rsplit("/", 1)[-1], email=OWNER)
    subscription = stripe_api.get("subscription", session["subscription"])
    stripe_webhooks.deliver("customer.subscription.created", subscription)
    stripe_webhooks.deliver("checkout.session.completed", session)
    return session


def test_a_stranger_s_abandoned_checkout_neither_blocks_nor_reaches_the_owner(
    stripe_api, stripe_webhooks, plan
):
    stranger = Client()
    stranger_checkout = stranger.post("/upgrade/", {"plan": plan.pk, "email": OWNER})
    assert stranger_checkout.status_code == 303
    # Nothing was tied to the address: no Stripe customer exists until someone pays.
    assert Subscriber.objects.get(email=OWNER).stripe_customer_id is None
    assert stripe_api.all("customer") == []

    owner = Client()
    session = _pay(
        stripe_api, stripe_webhooks, owner.post("/upgrade/", {"plan": plan.pk, "email": OWNER})
    )

    subscriber = Subscriber.objects.get(email=OWNER)
    assert subscriber.stripe_customer_id == session["customer"]
    assert subscriber.status == Subscriber.Status.ACTIVE
    assert Membership.objects.get(subscriber=subscriber).status == Membership.Status.ACTIVE
    # The stranger's browser now gets no checkout on the owner's customer (no saved
    # card, no receipts): it is asked to sign in, as anyone would be.
    again = stranger.post("/upgrade/", {"plan": plan.pk, "email": OWNER})
    assert again.status_code == 302
    assert again["Location"].startswith("/accounts/login/")
    assert len(_checkouts(stripe_api)) == 2
    # And the owner signs in by code and reads as a paid reader.
    mail.outbox.clear()
    owner.post("/accounts/login/code/", {"email": OWNER})
    code = CODE_RE.search(mail.outbox[-1].body)
    assert code, mail.outbox[-1].body
    owner.post("/accounts/login/code/confirm/", {"code": code.group(1)})
    assert user_is_paid(user=Subscriber.objects.get(email=OWNER).user)


def test_an_owner_asked_to_sign_in_for_a_pending_address_can_and_then_pays(
    stripe_api, stripe_webhooks, plan
):
    # The address is pending (say, from the free signup form, never confirmed) and has
    # a customer from an earlier checkout: the owner is asked to sign in, and can.
    customer = stripe_api.add_customer(email=OWNER)
    Subscriber.objects.create(
        email=OWNER, status=Subscriber.Status.PENDING, stripe_customer_id=customer["id"]
    )
    owner = Client()
    asked = owner.post("/upgrade/", {"plan": plan.pk, "email": OWNER})
    assert asked["Location"].startswith("/accounts/login/")

    mail.outbox.clear()
    requested = owner.post("/accounts/login/code/", {"email": OWNER})
    assert requested.status_code == 302
    assert mail.outbox and mail.outbox[-1].to == [OWNER]
    assert "Unknown" not in mail.outbox[-1].subject
    code = CODE_RE.search(mail.outbox[-1].body)
    assert code, mail.outbox[-1].body
    owner.post("/accounts/login/code/confirm/", {"code": code.group(1)})

    session = _pay(stripe_api, stripe_webhooks, owner.post("/upgrade/", {"plan": plan.pk}))
    assert session["customer"] == customer["id"]
    assert user_is_paid(user=Subscriber.objects.get(email=OWNER).user)
