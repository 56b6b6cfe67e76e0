"""A chunk through a provider's batch API (Mailgun, Postmark), against local stand-ins
of their HTTP APIs (tests/fakes/esp.py) driven by the real anymail backends."""

import json
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.urls import resolve
from django.utils import timezone

from newsletter.models import Delivery, EmailSend
from newsletter.services import sending
from newsletter.services.publishing import publish_article
from subscriptions.services.tokens import read_unsubscribe_token
from tests.factories import ArticleFactory, MembershipFactory, SubscriberFactory
from tests.fakes.esp import FakeMailgun, FakePostmark

pytestmark = pytest.mark.django_db

PAYWALLED_BODY = '<p>Free opening.</p><hr class="paywall"><p>Paid analysis.</p>'


@pytest.fixture(params=["mailgun", "postmark"])
def provider(request, settings):
    if request.param == "mailgun":
        fake = FakeMailgun().start()
        settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
        settings.ANYMAIL = {
            "MAILGUN_API_KEY": "key-test",
            "MAILGUN_API_URL": f"{fake.url}/v3",
            "MAILGUN_SENDER_DOMAIN": "mg.example.com",
        }
    else:
        fake = FakePostmark().start()
        settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
        settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "token", "POSTMARK_API_URL": fake.url + "/"}
    yield fake
    fake.stop()


@pytest.fixture
def readers():
    free = [SubscriberFactory(name=f"Reader {i}") for i in range(30)]
    paid = [MembershipFactory().subscriber for _ in range(3)]
    SubscriberFactory(email="gone@example.com", status="unsubscribed")
    return {"free": free, "paid": paid}


def start(article):
    email_send = publish_article(article=article).email_send
    EmailSend.objects.filter(pk=email_send.pk).update(
        status=EmailSend.Status.SENDING, started_at=timezone.now()
    )
    return email_send


def unsubscribe_link_owner(url: str) -> int:
    match = resolve(urlsplit(url).path)
    assert match.url_name == "unsubscribe"
    return read_unsubscribe_token(token=match.kwargs["token"])


def test_a_chunk_goes_out_in_one_call_per_segment_each_reader_with_their_own_link(
    provider, readers
):
    email_send = start(ArticleFactory(body=PAYWALLED_BODY, visibility="paid"))

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.claimed, result.sent, result.failed) == (33, 33, 0)
    assert sorted(provider.calls) == [3, 30]  # free and paid readers: two calls
    subscribers = {s.email: s for s in [*readers["free"], *readers["paid"]]}
    assert sorted(provider.recipients()) == sorted(subscribers)
    for copy in provider.copies:
        owner = subscribers[copy.to]
        # Their own link in the text, the html and the List-Unsubscribe header.
        text_link = next(w for w in copy.text.split() if "/unsubscribe/" in w)
        assert unsubscribe_link_owner(text_link) == owner.pk
        assert text_link in copy.html
        one_click = copy.headers["List-Unsubscribe"].split(",")[0].strip("<> ")
        assert unsubscribe_link_owner(one_click) == owner.pk
        assert copy.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert owner.email in copy.html and owner.email in copy.text
        if owner.name:
            assert f"Hi {owner.name}," in copy.text
        paid = owner in readers["paid"]
        assert ("Paid analysis." in copy.text) is paid
    # Each delivery records the provider's message id for its reader.
    ids = dict(email_send.deliveries.values_list("subscriber__email", "provider_message_id"))
    assert all(ids.values())
    assert set(email_send.deliveries.values_list("status", flat=True)) == {"sent"}


def test_a_call_refused_for_now_is_retried_later_for_its_readers(provider, readers, settings):
    email_send = start(ArticleFactory(body=PAYWALLED_BODY, visibility="paid"))
    provider.fail_calls(503, times=1)  # the first call (either segment) is throttled

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert result.retrying in (3, 30)
    assert result.sent == 33 - result.retrying
    waiting = email_send.deliveries.filter(status=Delivery.Status.PENDING)
    assert waiting.count() == result.retrying
    assert all(d.attempts == 1 and d.next_attempt_at for d in waiting)
    assert "503" in waiting.first().last_error
    # Once the retry is due, they go out, and nobody got a second copy.
    waiting.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    again = sending.send_chunk(email_send_id=email_send.pk)
    assert again.sent == result.retrying
    assert len(provider.recipients()) == len(set(provider.recipients())) == 33
    assert set(email_send.deliveries.values_list("status", flat=True)) == {"sent"}


def test_a_recipient_the_provider_rejects_fails_and_the_rest_are_sent(readers, settings):
    with FakePostmark() as postmark:
        settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
        settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "t", "POSTMARK_API_URL": postmark.url + "/"}
        rejected = readers["free"][5]
        postmark.reject(rejected.email)
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.failed, result.retrying) == (32, 1, 0)
    delivery = Delivery.objects.get(send=email_send, subscriber=rejected)
    assert delivery.status == Delivery.Status.FAILED
    assert "406" in delivery.last_error and "inactive" in delivery.last_error
    assert rejected.email not in postmark.recipients()


def test_a_call_refused_for_good_fails_its_readers(readers, settings):
    with FakeMailgun() as mailgun:
        settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
        settings.ANYMAIL = {
            "MAILGUN_API_KEY": "k",
            "MAILGUN_API_URL": f"{mailgun.url}/v3",
            "MAILGUN_SENDER_DOMAIN": "mg.example.com",
        }
        mailgun.fail_calls(400, times=2)
        email_send = start(ArticleFactory(body=PAYWALLED_BODY, visibility="paid"))

        result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.failed, result.retrying) == (0, 33, 0)
    assert mailgun.copies == []
    failed = email_send.deliveries.filter(status=Delivery.Status.FAILED)
    assert failed.count() == 33
    assert all("Mailgun: HTTP 400" in d.last_error for d in failed)


def test_batch_calls_hold_no_more_readers_than_the_provider_takes(settings):
    SubscriberFactory.create_batch(620)
    with FakePostmark() as postmark:
        settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
        settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "t", "POSTMARK_API_URL": postmark.url + "/"}
        settings.EMAIL_SEND_CONNECTIONS = 1
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk, size=620)

    assert result.sent == 620
    assert sorted(postmark.calls) == [120, 500]


def test_without_batch_sending_each_reader_is_one_call(provider, readers, settings):
    settings.EMAIL_SEND_ESP_BATCH = False
    email_send = start(ArticleFactory())

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert result.sent == 33
    assert provider.calls == [1] * 33
    # Each delivery records the provider's own id for its message (what its webhooks
    # name), not the Message-ID we wrote.
    ids = list(email_send.deliveries.values_list("provider_message_id", flat=True))
    assert len(set(ids)) == 33
    assert all(provider.provider in i and not i.startswith("<broadside.") for i in ids)


def postmark_settings(settings, postmark, **extra):
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    settings.ANYMAIL = {
        "POSTMARK_SERVER_TOKEN": "server-token-1",
        "POSTMARK_API_URL": postmark.url + "/",
        **extra,
    }
    settings.EMAIL_SEND_CONNECTIONS = 1


def test_batch_calls_go_with_the_servers_token_and_message_stream(settings):
    SubscriberFactory.create_batch(3)
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark, POSTMARK_MESSAGE_STREAM="newsletters")
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk)

    assert result.sent == 3
    assert [h["X-Postmark-Server-Token"] for h in postmark.request_headers] == ["server-token-1"]
    assert postmark.message_streams == ["newsletters"] * 3


def test_two_calls_refused_in_a_row_end_the_connections_share_of_the_chunk(settings):
    SubscriberFactory.create_batch(1001)
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark)
        postmark.fail_calls(503, times=2)
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk, size=1001)

    # Two calls of 500 refused; the last reader is never offered to a provider that
    # refuses everything, and waits, untried, for the sweeper to restart the send.
    assert (result.sent, result.retrying, result.released) == (0, 1000, 1)
    assert result.outage.startswith("Postmark: HTTP 503")
    assert len(postmark.request_headers) == 2
    untried = email_send.deliveries.get(attempts=0)
    assert (untried.status, untried.next_attempt_at) == (Delivery.Status.PENDING, None)


def test_one_refused_call_does_not_stop_the_calls_after_it(settings):
    SubscriberFactory.create_batch(1001)
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark)
        postmark.fail_calls(503, times=1)
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk, size=1001)

    assert (result.sent, result.retrying, result.released) == (501, 500, 0)
    assert result.outage == ""
    assert sorted(postmark.calls) == [1, 500]


def test_a_segment_of_one_reader_goes_out_in_its_own_call(settings):
    free = SubscriberFactory.create_batch(2)
    paid = MembershipFactory().subscriber
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark)
        email_send = start(ArticleFactory(body=PAYWALLED_BODY, visibility="paid"))

        result = sending.send_chunk(email_send_id=email_send.pk)

    assert result.sent == 3
    assert sorted(postmark.calls) == [1, 2]
    copies = {copy.to: copy for copy in postmark.copies}
    assert "Paid analysis." in copies[paid.email].text
    assert all("Paid analysis." not in copies[r.email].text for r in free)
    # The provider's reports name the send and the segment each copy came from.
    assert copies[paid.email].headers["Feedback-ID"].startswith(f"{email_send.pk}:paid:")
    assert copies[free[0].email].headers["Feedback-ID"].startswith(f"{email_send.pk}:free:")


def test_calls_refused_for_good_fail_their_readers_and_the_next_call_still_goes(settings):
    SubscriberFactory.create_batch(1001)
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark)
        postmark.fail_calls(422, times=2)  # the message itself is refused, not the service
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk, size=1001)

    # Postmark answers a batch refused as a whole with one error object, not a list of
    # answers: the call's readers fail with its reason (they were once taken for an
    # outage, released untried, and offered again and again).
    assert (result.sent, result.failed, result.retrying, result.released) == (1, 1000, 0, 0)
    assert result.outage == ""
    assert postmark.calls == [1]
    failed = email_send.deliveries.filter(status=Delivery.Status.FAILED)
    assert {d.last_error for d in failed} == {
        'Postmark: HTTP 422 {"ErrorCode": 422, "Message": "Try later"}'
    }


def test_each_reader_postmark_refuses_is_failed_or_retried_by_its_own_answer(settings):
    readers = SubscriberFactory.create_batch(6)
    invalid, inactive = readers[1], readers[3]
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark)
        postmark.invalid.add(invalid.email)
        postmark.reject(inactive.email)
        postmark.unanswered = 1  # the last message of the batch gets no answer
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.failed, result.retrying) == (3, 2, 1)
    rows = {
        d.subscriber_id: (d.status, d.last_error)
        for d in email_send.deliveries.exclude(status=Delivery.Status.SENT)
    }
    assert rows == {
        invalid.pk: (Delivery.Status.FAILED, "Postmark 300: Invalid 'To' address."),
        inactive.pk: (Delivery.Status.FAILED, rows[inactive.pk][1]),
        # Not refused, only unanswered: tried again later.
        readers[5].pk: (Delivery.Status.PENDING, "Postmark did not answer for this message."),
    }
    assert rows[inactive.pk][1].startswith("Postmark 406: ")
    sent = email_send.deliveries.filter(status=Delivery.Status.SENT)
    assert {d.subscriber_id for d in sent} == {readers[0].pk, readers[2].pk, readers[4].pk}
    assert all(d.provider_message_id.startswith("postmark-") for d in sent)


@pytest.mark.parametrize(
    ("status", "kept"),
    [
        (429, Delivery.Status.PENDING),  # throttled: tried again later
        (500, Delivery.Status.PENDING),  # the provider's own failure
        (503, Delivery.Status.PENDING),
        (400, Delivery.Status.FAILED),  # the call itself is wrong: trying again won't help
        (422, Delivery.Status.FAILED),
        (499, Delivery.Status.FAILED),
    ],
)
def test_a_call_refused_as_a_whole_is_retried_only_for_throttling_or_the_providers_fault(
    status, kept, settings
):
    readers = SubscriberFactory.create_batch(3)
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark)
        postmark.fail_calls(status)
        email_send = start(ArticleFactory())

        sending.send_chunk(email_send_id=email_send.pk)

    rows = {d.subscriber_id: (d.status, d.last_error) for d in email_send.deliveries.all()}
    answer = f'{{"ErrorCode": {status}, "Message": "Try later"}}'
    assert rows == {r.pk: (kept, f"Postmark: HTTP {status} {answer}") for r in readers}


def closed_port() -> int:
    """A local port nothing listens on."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_provider_that_cannot_be_reached_has_the_calls_readers_tried_again_later(settings):
    readers = SubscriberFactory.create_batch(3)
    url = f"http://127.0.0.1:{closed_port()}/"
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    settings.ANYMAIL = {"POSTMARK_SERVER_TOKEN": "t", "POSTMARK_API_URL": url}
    settings.EMAIL_SEND_CONNECTIONS = 1
    email_send = start(ArticleFactory())

    result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.failed, result.retrying) == (0, 0, 3)
    rows = list(email_send.deliveries.values_list("subscriber_id", "status", "last_error"))
    assert {(pk, status) for pk, status, _ in rows} == {
        (r.pk, Delivery.Status.PENDING) for r in readers
    }
    (error,) = {error for _, _, error in rows}
    # No answer to quote: the exception's own text, its first 200 characters.
    prefix = "Postmark: AnymailRequestsAPIError: "
    assert error.startswith(f"{prefix}Error posting to {url}email/batch")
    assert len(error) == len(prefix) + 200


LONG_HTML = (
    b"<html><body>" + b"502 Bad Gateway, the upstream is restarting. " * 10 + b"</body></html>"
)
LONG_JSON = json.dumps({"ErrorCode": 502, "Message": "Upstream restarting; " * 20})


@pytest.mark.parametrize(
    ("body", "content_type", "detail"),
    [
        (LONG_HTML, "text/html", LONG_HTML.decode()[:200]),
        (LONG_JSON.encode(), "application/json", LONG_JSON[:200]),
    ],
)
def test_a_refused_calls_error_quotes_the_first_200_characters_of_the_answer(
    body, content_type, detail, settings
):
    SubscriberFactory.create_batch(2)
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark)
        postmark.fail_calls(502, body=body, content_type=content_type)
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk)

    assert result.retrying == 2
    errors = set(email_send.deliveries.values_list("last_error", flat=True))
    assert errors == {f"Postmark: HTTP 502 {detail}"}


def test_an_answer_that_is_neither_answers_nor_an_error_fails_the_calls_readers(settings):
    """Postmark's batch endpoint answers a list (one answer per message) or one error
    object; anything else is no sign the messages went out, nor that they did not."""
    readers = SubscriberFactory.create_batch(2)
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark)
        postmark.fail_calls(200, body=b'"Queued"')
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.failed, result.retrying) == (0, 2, 0)
    rows = {d.subscriber_id: (d.status, d.last_error) for d in email_send.deliveries.all()}
    assert rows == {r.pk: (Delivery.Status.FAILED, 'Postmark: HTTP 200 "Queued"') for r in readers}


def test_a_message_postmark_answers_with_another_error_code_is_tried_again_later(settings):
    """Only 406 (inactive) and 300 (invalid address) fail a reader for good; another
    error in a message's answer (here: the account ran out of credits) is retried."""
    readers = SubscriberFactory.create_batch(4)
    with FakePostmark() as postmark:
        postmark_settings(settings, postmark)
        postmark.errors[readers[1].email] = (405, "Not allowed to send: out of credits.")
        postmark.invalid.add(readers[2].email)
        email_send = start(ArticleFactory())

        result = sending.send_chunk(email_send_id=email_send.pk)

    assert (result.sent, result.failed, result.retrying) == (2, 1, 1)
    rows = {
        d.subscriber_id: (d.status, d.last_error)
        for d in email_send.deliveries.exclude(status=Delivery.Status.SENT)
    }
    assert rows == {
        readers[1].pk: (
            Delivery.Status.PENDING,
            "Postmark 405: Not allowed to send: out of credits.",
        ),
        readers[2].pk: (Delivery.Status.FAILED, "Postmark 300: Invalid 'To' address."),
    }
