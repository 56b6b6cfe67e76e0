"""Group subscriptions: seats bought through Checkout, members invited, access shared."""

from __future__ import annotations

import re

import pytest
from django.core import mail

from subscriptions.models import GroupInvite, Membership, Plan, Subscriber
from subscriptions.services import access, groups, revenue
from tests.factories import MembershipFactory, PlanFactory, SubscriberFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def group_plan(stripe_api):
    price = stripe_api.add_price(unit_amount=600, interval="month")
    return PlanFactory(
        name="Newsroom", amount=600, kind=Plan.Kind.GROUP, stripe_price_id=price["id"]
    )


@pytest.fixture
def buyer(client):
    user = UserFactory(email="desk@ministry.example")
    client.force_login(user)
    return user


def buy_group(client, stripe_api, stripe_webhooks, plan, seats=3) -> Membership:
    response = client.post("/upgrade/", {"plan": plan.pk, "seats": seats})
    assert response.status_code == 303, response.content.decode()[:2000]
    session = stripe_api.complete_checkout(response["Location"].rsplit("/", 1)[-1])
    stripe_webhooks.deliver("checkout.session.completed", session)
    return Membership.objects.get(stripe_subscription_id=session["subscription"])


def join_link(message) -> str:
    match = re.search(r"http://testserver(/account/group/join/[^\s/]+/)", message.body)
    assert match, message.body
    return match.group(1)


def test_a_group_of_three_seats_invites_three_readers_who_are_paid_until_it_is_canceled(
    client, stripe_api, stripe_webhooks, group_plan, buyer, django_capture_on_commit_callbacks
):
    group = buy_group(client, stripe_api, stripe_webhooks, group_plan, seats=3)
    sent = stripe_api.requests_to("POST", "/v1/checkout/sessions")[-1].params
    assert sent["line_items"][0]["quantity"] == "3"
    assert group.quantity == 3
    # The group's subscription pays for its seats, not for the buyer.
    assert not access.subscriber_is_paid(subscriber=group.subscriber)
    outsider = SubscriberFactory(email="outsider@example.com")
    individual = MembershipFactory(subscriber=SubscriberFactory(email="solo@example.com"))

    mail.outbox.clear()
    readers = ["a@uni.example", "b@uni.example", "c@uni.example"]
    for email in readers:
        with django_capture_on_commit_callbacks(execute=True):
            client.post("/account/group/", {"action": "invite", "email": email})
    assert sorted(m.to[0] for m in mail.outbox) == readers
    # A fourth does not fit.
    with django_capture_on_commit_callbacks(execute=True):
        page = client.post(
            "/account/group/", {"action": "invite", "email": "d@uni.example"}, follow=True
        )
    assert "All 3 seats are taken" in page.content.decode()
    assert GroupInvite.objects.count() == 3

    links = {m.to[0]: join_link(m) for m in mail.outbox}
    for email in readers:
        client.logout()
        assert client.get(links[email]).status_code == 200  # looking changes nothing
        assert not Subscriber.objects.filter(email=email).exists()
        assert client.post(links[email]).status_code == 302
    members = Subscriber.objects.filter(email__in=readers)
    assert all(access.subscriber_is_paid(subscriber=m) for m in members)
    assert not access.subscriber_is_paid(subscriber=outsider)
    summary = revenue.revenue_summary()
    assert (summary.groups, summary.group_seats, summary.group_seats_taken) == (1, 3, 3)
    assert summary.mrr == {"usd": 1800 + individual.plan.amount}

    # Joining again is the same seat.
    client.post(links[readers[0]])
    assert Membership.objects.filter(kind=Membership.Kind.GROUP).count() == 3

    # The buyer sees who joined, and removes one: that reader loses access alone.
    client.force_login(buyer)
    page = client.get("/account/group/").content.decode()
    assert all(email in page for email in readers) and "Joined" in page
    removed = GroupInvite.objects.get(email=readers[0])
    client.post("/account/group/", {"action": "remove", "invite": removed.pk})
    assert not access.subscriber_is_paid(subscriber=members.get(email=readers[0]))
    assert access.subscriber_is_paid(subscriber=members.get(email=readers[1]))
    refused = client.post(links[readers[0]])
    assert refused.status_code == 409

    # Stripe cancels the group's subscription: every seat ends with it.
    canceled = stripe_api.update_subscription(group.stripe_subscription_id, status="canceled")
    stripe_webhooks.deliver("customer.subscription.deleted", canceled)
    assert not any(access.subscriber_is_paid(subscriber=m) for m in members)
    assert access.subscriber_is_paid(subscriber=individual.subscriber)
    assert revenue.revenue_summary().group_seats_taken == 0


def test_changing_seats_changes_the_stripe_quantity(
    client, stripe_api, stripe_webhooks, group_plan, buyer, django_capture_on_commit_callbacks
):
    group = buy_group(client, stripe_api, stripe_webhooks, group_plan, seats=2)
    with django_capture_on_commit_callbacks(execute=True):
        groups.invite_to_group(group=group, email="one@example.com")
        groups.invite_to_group(group=group, email="two@example.com")
    page = client.post("/account/group/", {"action": "seats", "seats": 1}, follow=True)
    assert "remove someone" in page.content.decode()
    assert stripe_api.requests_to("POST", f"/v1/subscriptions/{group.stripe_subscription_id}") == []

    client.post("/account/group/", {"action": "seats", "seats": 5})
    (update,) = stripe_api.requests_to("POST", f"/v1/subscriptions/{group.stripe_subscription_id}")
    assert update.params["items"][0]["quantity"] == "5"
    stripe_webhooks.deliver(
        "customer.subscription.updated", stripe_api.subscription(group.stripe_subscription_id)
    )
    group.refresh_from_db()
    assert group.quantity == 5
    assert revenue.revenue_summary().mrr == {"usd": 3000}


def test_the_group_page_needs_a_group_and_a_signed_in_buyer(client, group_plan):
    assert client.get("/account/group/").status_code == 302
    client.force_login(UserFactory(email="nogroup@example.com"))
    assert "You have no group subscription" in client.get("/account/group/").content.decode()
    # Without a group of their own, nobody's invitation can be removed from here.
    other = MembershipFactory(plan=group_plan, subscriber=SubscriberFactory())
    invite = GroupInvite.objects.create(group=other, email="kept@example.com")
    client.post("/account/group/", {"action": "remove", "invite": invite.pk})
    invite.refresh_from_db()
    assert invite.removed_at is None


def test_an_invitation_link_that_was_tampered_with_is_refused(client):
    assert client.get("/account/group/join/nonsense/").status_code == 404


def test_an_invitation_link_signs_in_only_once_when_it_takes_the_seat(
    client, stripe_api, stripe_webhooks, group_plan, buyer, django_capture_on_commit_callbacks
):
    from django.test import Client

    group = buy_group(client, stripe_api, stripe_webhooks, group_plan, seats=2)
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        groups.invite_to_group(group=group, email="once@uni.example")
    link = join_link(mail.outbox[-1])

    first = Client()
    assert first.post(link).status_code == 302
    assert first.get("/account/").wsgi_request.user.email == "once@uni.example"

    # Whoever else holds the link later (a forwarded mail, a shared computer) is not signed in.
    for _ in range(3):
        other = Client()
        response = other.post(link, follow=True)
        assert not response.wsgi_request.user.is_authenticated
        assert response.redirect_chain[-1][0].startswith("/accounts/login/code/")
        assert "already joined this group" in response.content.decode()
        assert other.get("/account/").status_code == 302  # still signed out
    assert Membership.objects.filter(kind=Membership.Kind.GROUP).count() == 1

    # The signed-in invitee sees that they have joined.
    again = first.post(link, follow=True)
    assert again.wsgi_request.user.email == "once@uni.example"
    assert "already joined this group" in again.content.decode()


def test_with_stripe_off_changing_seats_says_so_instead_of_failing(
    client, stripe_api, stripe_webhooks, group_plan, buyer, settings
):
    group = buy_group(client, stripe_api, stripe_webhooks, group_plan, seats=2)
    settings.STRIPE_SECRET_KEY = ""
    page = client.post("/account/group/", {"action": "seats", "seats": 4}, follow=True)
    assert page.status_code == 200
    assert "payments are not set up on this site" in page.content.decode()
    group.refresh_from_db()
    assert group.quantity == 2
