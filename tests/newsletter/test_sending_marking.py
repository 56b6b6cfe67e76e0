"""What a worker writes back at the end of a chunk: only about the deliveries it still
holds, never about those the sweeper or another worker has taken since."""

import pytest
from django.utils import timezone

from newsletter.models import Article, Delivery, EmailSend
from newsletter.services import sending
from newsletter.services.sending import marking
from tests.factories import ArticleFactory, SubscriberFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def claimed():
    """A sending send of four readers, all claimed by one worker; and that claim."""
    readers = SubscriberFactory.create_batch(4)
    article = ArticleFactory(status=Article.Status.PUBLISHED, published_at=timezone.now())
    email_send = EmailSend.objects.create(
        article=article,
        audience=Article.EmailAudience.EVERYONE,
        status=EmailSend.Status.SENDING,
        recipient_count=len(readers),
    )
    Delivery.objects.bulk_create(Delivery(send=email_send, subscriber=r) for r in readers)
    claim, deliveries, _ = sending.claim_chunk(email_send_id=email_send.pk)
    assert len(deliveries) == 4
    return claim, deliveries


def test_releasing_untried_deliveries_touches_only_those_this_worker_still_holds(claimed):
    claim, deliveries = claimed
    mine, swept, taken_over, sent = deliveries
    # The sweeper handed one back (its lease ran out); another worker claimed one again;
    # one went out and was marked.
    Delivery.objects.filter(pk=swept.pk).update(status=Delivery.Status.PENDING)
    Delivery.objects.filter(pk=taken_over.pk).update(claim_token=claim.token + 1)
    assert marking._mark_sent(pk=sent.pk, token=claim.token, provider_message_id="<m@x>")

    released = marking._release(deliveries, token=claim.token)

    assert released == 1
    rows = {
        d.pk: (d.status, d.attempts, d.claim_token)
        for d in Delivery.objects.filter(pk__in=[d.pk for d in deliveries])
    }
    assert rows == {
        # Back to pending, and the attempt it never had is not counted.
        mine.pk: (Delivery.Status.PENDING, 0, claim.token),
        # Already pending: its attempt stays counted (it is not released twice).
        swept.pk: (Delivery.Status.PENDING, 1, claim.token),
        taken_over.pk: (Delivery.Status.CLAIMED, 1, claim.token + 1),
        sent.pk: (Delivery.Status.SENT, 1, claim.token),
    }
