"""Opens and clicks counted once per reader whatever order and concurrency the flushes
have; none lost between the flush and the roll-up; none kept past retention."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.utils import timezone

from newsletter.models import (
    ArticleEngagementDay,
    ClickEvent,
    Delivery,
    EmailSend,
    OpenEvent,
    TrackedLink,
)
from newsletter.services import engagement, tracking
from newsletter.services.sending import sends
from publication.models import Publication
from subscriptions.models import Subscriber
from tests import processes
from tests.factories import ArticleFactory, SubscriberFactory
from tests.test_concurrency import at_once, wait_until_blocked_or_done

PERSON = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.3"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0"


def sent_to(readers: int, *, hours_ago: float = 1):
    article = ArticleFactory()
    email_send = EmailSend.objects.create(
        article=article, audience="everyone", status=EmailSend.Status.SENT, sent_count=readers
    )
    sent_at = timezone.now() - timedelta(hours=hours_ago)
    deliveries = [
        Delivery.objects.create(
            send=email_send, subscriber=SubscriberFactory(), status="sent", sent_at=sent_at
        )
        for _ in range(readers)
    ]
    return article, deliveries


def open_hit(delivery: Delivery, *, minutes_after: float) -> tracking.Hit:
    at = delivery.sent_at + timedelta(minutes=minutes_after)
    return tracking.Hit(delivery.pk, 0, at.timestamp(), PERSON, "203.0.113.9")


def click_hit(delivery: Delivery, link: TrackedLink, *, minutes_after: float) -> tracking.Hit:
    at = delivery.sent_at + timedelta(minutes=minutes_after)
    return tracking.Hit(delivery.pk, link.pk, at.timestamp(), BROWSER, "203.0.113.9")


@pytest.mark.django_db
def test_an_earlier_open_and_click_flushed_after_a_later_one_take_the_first_mark():
    article, [reader] = sent_to(1)
    link = TrackedLink.objects.create(article=article, url="https://example.org/", digest="d")

    tracking.record_events(
        [open_hit(reader, minutes_after=30), click_hit(reader, link, minutes_after=30)]
    )
    tracking.record_events(
        [open_hit(reader, minutes_after=5), click_hit(reader, link, minutes_after=5)]
    )

    reader.refresh_from_db()
    early = reader.sent_at + timedelta(minutes=5)
    assert (reader.opened_at, reader.clicked_at) == (early, early)
    assert [e.at for e in OpenEvent.objects.filter(first=True)] == [early]
    assert [e.at for e in ClickEvent.objects.filter(first=True)] == [early]
    assert [e.at for e in ClickEvent.objects.filter(first_of_link=True)] == [early]
    figures = engagement.article_engagement(article=article)
    assert (figures.opened_readers, figures.clicked_readers) == (1, 1)
    assert figures.links[0].readers == 1


@pytest.mark.django_db(transaction=True)
def test_flushes_at_once_count_each_reader_once():
    article, deliveries = sent_to(40)
    for round_ in range(5):
        # Each flush holds a later open of some readers and an earlier one of the others.
        base = 60 * round_
        one = [
            open_hit(d, minutes_after=base + (30 if n % 2 else 5)) for n, d in enumerate(deliveries)
        ]
        two = [
            open_hit(d, minutes_after=base + (5 if n % 2 else 30)) for n, d in enumerate(deliveries)
        ]
        # Rounds after the first bring later opens only: the first open stays the first.
        at_once(lambda h=one: tracking.record_events(h), lambda h=two: tracking.record_events(h))

        figures = engagement.article_engagement(article=article)
        assert figures.opened_readers == len(deliveries)
        assert OpenEvent.objects.filter(first=True).count() == len(deliveries)
        for delivery in deliveries:
            delivery.refresh_from_db()
            assert delivery.opened_at == delivery.sent_at + timedelta(minutes=5)


@pytest.mark.django_db(transaction=True)
def test_an_event_committed_after_a_higher_id_is_still_rolled_up():
    article, (first, second, third) = sent_to(3)
    link = TrackedLink.objects.create(article=article, url="https://example.org/", digest="d")
    holding, release = threading.Event(), threading.Event()

    def hold_second_delivery() -> None:  # a third connection keeps the row locked
        try:
            with transaction.atomic():
                Delivery.objects.select_for_update().get(pk=second.pk)
                holding.set()
                release.wait(20)
        finally:
            connections.close_all()

    def flush(hits) -> None:
        try:
            tracking.record_events(hits)
        finally:
            connections.close_all()

    def flush_then_roll_up() -> None:
        try:
            tracking.record_events([open_hit(third, minutes_after=2)])
            engagement.roll_up_events(now=timezone.now() + timedelta(minutes=5))
        finally:
            connections.close_all()

    locker = threading.Thread(target=hold_second_delivery)
    locker.start()
    assert holding.wait(10)
    # This flush inserts its open, then waits on the locked delivery to set its click.
    slow = threading.Thread(
        target=flush,
        args=([open_hit(first, minutes_after=1), click_hit(second, link, minutes_after=1)],),
    )
    slow.start()
    wait_until_blocked_or_done(slow)
    fast = threading.Thread(target=flush_then_roll_up)
    fast.start()
    fast.join(3)  # it completes at once if nothing keeps the flushes and roll-up in turn
    release.set()
    for thread in (locker, slow, fast):
        thread.join(30)
        assert not thread.is_alive()

    engagement.roll_up_events(now=timezone.now() + timedelta(minutes=5))
    day = ArticleEngagementDay.objects.get(article=article)
    assert (day.human_opens, day.readers_opened, day.human_clicks) == (2, 2, 1)


@pytest.mark.django_db
def test_retention_clears_the_deliveries_first_open_and_click(settings):
    article, [old] = sent_to(1, hours_ago=24 * 40)
    _, [recent] = sent_to(1)
    link = TrackedLink.objects.create(article=article, url="https://example.org/", digest="d")
    tracking.record_events([open_hit(old, minutes_after=1), click_hit(old, link, minutes_after=1)])
    tracking.record_events([open_hit(recent, minutes_after=1)])
    settings.TRACKING_RETENTION_DAYS = 30

    engagement.expire_events()
    # A hit from that old email now is not recorded: it would count the reader again.
    assert tracking.record_events([open_hit(old, minutes_after=60 * 24 * 39)]) == 0
    engagement.roll_up_events(now=timezone.now() + timedelta(minutes=5))

    old.refresh_from_db()
    recent.refresh_from_db()
    assert (old.opened_at, old.clicked_at) == (None, None)
    assert recent.opened_at is not None
    day = ArticleEngagementDay.objects.get(article=article)
    assert (day.readers_opened, day.readers_clicked) == (1, 1)


@pytest.fixture
def redis_cache(settings):
    with processes.flushed_redis(processes.redis_database_url(6)) as url:
        settings.CACHES = {
            "default": {"BACKEND": "config.cache.SharedClientRedisCache", "LOCATION": url}
        }
        yield tracking._redis()


@pytest.mark.django_db(transaction=True)
def test_a_flush_that_fails_leaves_its_hits_in_redis_and_the_next_writes_them_once(
    redis_cache,
):
    _, (reader, other, gone) = sent_to(3)
    for hit in (
        open_hit(reader, minutes_after=1),
        open_hit(other, minutes_after=2),
        open_hit(gone, minutes_after=3),
    ):
        tracking.record(hit)
    gone.delete()  # its hit is dropped, not the batch
    holding, release = threading.Event(), threading.Event()

    def hold_the_writers_lock() -> None:
        try:
            with transaction.atomic():
                tracking.lock_engagement_writers()
                holding.set()
                release.wait(20)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_writers_lock)
    holder.start()
    assert holding.wait(10)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '200ms'")
    try:
        with pytest.raises(OperationalError):  # the database gives up waiting: a failure
            tracking.flush_buffered_events()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
        release.set()
        holder.join(10)
    assert not OpenEvent.objects.exists()

    tracking.flush_buffered_events()
    tracking.flush_buffered_events()
    assert sorted(OpenEvent.objects.values_list("delivery_id", flat=True)) == sorted(
        [reader.pk, other.pk]
    )


@pytest.mark.django_db
def test_a_batch_written_by_a_flush_that_died_before_deleting_it_is_not_written_again(
    redis_cache,
):
    _, [reader] = sent_to(1)
    tracking.record(open_hit(reader, minutes_after=1))
    tracking._outbox.push()
    # A flush takes the batch and writes it, and its worker is killed before it deletes it.
    number, raw = tracking._take_batch(redis_cache, 2000)
    tracking._write_batch(redis_cache, number, [tracking.Hit.loads(item) for item in raw])

    tracking.flush_buffered_events()

    assert OpenEvent.objects.count() == 1
    tracking.record(open_hit(reader, minutes_after=2))
    tracking.flush_buffered_events()
    assert OpenEvent.objects.count() == 2


@pytest.mark.django_db
def test_the_opens_and_clicks_of_a_reader_who_opted_out_are_not_recorded():
    article, (counted, opted_out) = sent_to(2)
    link = TrackedLink.objects.create(article=article, url="https://example.org/", digest="d")
    Subscriber.objects.filter(pk=opted_out.subscriber_id).update(tracking_opt_out=True)

    tracking.record_events(
        [
            open_hit(counted, minutes_after=1),
            open_hit(opted_out, minutes_after=1),
            click_hit(opted_out, link, minutes_after=2),
        ]
    )

    assert list(OpenEvent.objects.values_list("delivery_id", flat=True)) == [counted.pk]
    assert not ClickEvent.objects.exists()
    opted_out.refresh_from_db()
    assert opted_out.opened_at is None


@pytest.mark.django_db
def test_nothing_is_recorded_while_the_publication_does_not_count_opens_and_clicks():
    _, [reader] = sent_to(1)
    Publication.objects.filter(pk=Publication.load().pk).update(track_engagement=False)

    assert tracking.record_events([open_hit(reader, minutes_after=1)]) == 0

    assert not OpenEvent.objects.exists()
    Publication.objects.filter(pk=1).update(track_engagement=True)
    assert tracking.record_events([open_hit(reader, minutes_after=2)]) == 1


@pytest.mark.django_db
def test_a_send_made_while_tracking_was_off_records_nothing_after_it_is_switched_on():
    Publication.objects.filter(pk=Publication.load().pk).update(track_engagement=False)
    untracked = sends.create_email_send(article=ArticleFactory(email_audience="everyone"))
    Publication.objects.filter(pk=1).update(track_engagement=True)
    tracked = sends.create_email_send(article=ArticleFactory(email_audience="everyone"))
    assert (untracked.tracked, tracked.tracked) == (False, True)
    _, [reader] = sent_to(1)
    Delivery.objects.filter(pk=reader.pk).update(send=untracked)

    assert tracking.record_events([open_hit(reader, minutes_after=1)]) == 0

    assert not OpenEvent.objects.exists()
