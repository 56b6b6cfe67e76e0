"""Growth and money over time: the list, free and paid readers, new and lost, MRR and
donations by the publication's days, and what each source converted."""

from __future__ import annotations

from datetime import timedelta

import pytest

from subscriptions.models import Donation, Membership, Subscriber
from subscriptions.services.growth import conversions_by_source, growth_by_day
from tests.factories import MembershipFactory, PlanFactory, SubscriberFactory
from tests.subscriptions import growth_scenario

pytestmark = pytest.mark.django_db


@pytest.fixture
def new_york(settings):
    settings.TIME_ZONE = growth_scenario.TIME_ZONE


def test_growth_figures_follow_the_publications_days_and_count_each_reader_once(new_york):
    growth_scenario.build()

    assert growth_scenario.figures() == growth_scenario.EXPECTED


def test_in_utc_the_same_rows_fall_on_other_days(settings):
    settings.TIME_ZONE = "UTC"
    growth_scenario.build()

    figures = growth_scenario.figures()

    # B confirmed at 03:30 UTC on 2 March: a new reader of 2 March here, of 1 March in
    # New York; C left at 04:59 UTC on 6 March.
    assert figures["new"] == [0, 1, 1, 0, 0, 0, 1, 0, 0, 0]
    assert figures["lost"] == [0, 0, 0, 0, 0, 1, 0, 0, 1, 0]
    # The donation paid at 04:00 UTC on 1 March is March's here.
    assert figures["donations_by_month"]["usd"] == [0, 0, 3100]


def test_a_reader_who_signed_up_again_and_waits_to_confirm_is_not_on_the_list(new_york):
    growth_scenario.build()
    # C signs up again: pending, with the old confirmation and unsubscribe times kept.
    Subscriber.objects.filter(email="c@example.com").update(status=Subscriber.Status.PENDING)

    growth = growth_by_day(days=growth_scenario.DAYS, now=growth_scenario.NOW)

    assert growth.new == [1, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert growth.lost == [0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
    assert growth.subscribers == [4, 4, 4, 4, 4, 4, 5, 5, 4, 4]


def test_no_readers_and_one_day_give_zeros_not_errors():
    growth = growth_by_day(days=1)

    assert len(growth.days) == 1
    assert (growth.subscribers, growth.free, growth.paid, growth.new, growth.lost) == (
        [0],
        [0],
        [0],
        [0],
        [0],
    )
    assert growth.mrr == {}


def test_conversions_count_confirmed_signups_paid_upgrades_and_net_donations():
    plan = PlanFactory(amount=1000)
    SubscriberFactory(source_article_id=7)
    SubscriberFactory(source_article_id=7, status=Subscriber.Status.PENDING, confirmed_at=None)
    SubscriberFactory(source_article_id=8)
    MembershipFactory(plan=plan, source_article_id=7)
    MembershipFactory(plan=plan, source_article_id=7, status=Membership.Status.INCOMPLETE)
    MembershipFactory(plan=plan, source_article_id=7, status=Membership.Status.CANCELED)
    Donation.objects.create(amount=2000, amount_refunded=500, status="paid", source_article_id=7)
    Donation.objects.create(amount=700, status="pending", source_article_id=7)
    Donation.objects.create(amount=300, currency="eur", status="paid", source_article_id=7)

    figures = conversions_by_source(source_article_ids=[7, 8, 9])

    seven = figures[7]
    assert (seven.signups, seven.pending_signups) == (1, 1)
    assert (seven.upgrades, seven.paying_now) == (2, 1)  # the canceled one paid once
    assert seven.mrr == {"usd": 1000}
    assert (seven.donations, seven.donated) == (2, {"usd": 1500, "eur": 300})
    assert figures[8].signups == 1 and figures[8].upgrades == 0
    assert figures[9] == type(figures[9])()


def test_a_gift_that_starts_later_counts_from_its_start(new_york):
    now = growth_scenario.NOW
    reader = SubscriberFactory(confirmed_at=now - timedelta(days=30))
    membership = MembershipFactory(
        subscriber=reader,
        kind=Membership.Kind.GIFT,
        plan=None,
        stripe_subscription_id=None,
        starts_at=now - timedelta(days=2),
    )
    Membership.objects.filter(pk=membership.pk).update(created_at=now - timedelta(days=9))

    growth = growth_by_day(days=5, now=now)

    assert growth.paid == [0, 0, 1, 1, 1]
    assert growth.free == [1, 1, 0, 0, 0]
