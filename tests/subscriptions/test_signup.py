"""Free signup with double opt-in (ARCHITECTURE.md flow 1)."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from allauth.account.models import EmailAddress
from django.core import mail, signing
from django.test import Client
from django.utils import timezone

from subscriptions.models import Subscriber, Suppression
from subscriptions.services.addresses import email_hash
from subscriptions.services.signup import CONFIRMATION_RESEND_INTERVAL, subscribe
from subscriptions.services.tokens import make_confirmation_token
from subscriptions.views import signup as signup_views
from tests.factories import SubscriberFactory

pytestmark = pytest.mark.django_db

CSRF_RE = re.compile(rb'name="csrfmiddlewaretoken" value="[^"]*"')
LINK_RE = re.compile(r"http://testserver(/subscribe/confirm/[^/\s]+/)")


def post_signup(client: Client, capture, email: str, **extra):
    with capture(execute=True):
        return client.post(
            "/subscribe/",
            {"email": email, "website": "", "source": "/p/some-article/", **extra},
            REMOTE_ADDR=extra.pop("ip", "203.0.113.7"),
        )


def confirmation_path(message) -> str:
    match = LINK_RE.search(message.body)
    assert match, message.body
    html = message.alternatives[0][0]
    assert match.group(1) in html
    return match.group(1)


def test_double_opt_in_through_the_sent_email_activates_the_subscriber(
    client, django_capture_on_commit_callbacks
):
    response = post_signup(client, django_capture_on_commit_callbacks, "New.Reader@Example.COM")

    assert response.status_code == 200
    assert b"Check your inbox" in response.content
    subscriber = Subscriber.objects.get()
    # The one normal form: the whole address lower-cased (subscriptions.services.addresses).
    assert subscriber.email == "new.reader@example.com"
    assert subscriber.status == Subscriber.Status.PENDING
    assert subscriber.consent_ip == "203.0.113.7"
    assert subscriber.consent_source == "/p/some-article/"
    assert subscriber.consent_at is not None
    assert subscriber.user is None
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["new.reader@example.com"]

    with django_capture_on_commit_callbacks(execute=True):
        response = client.get(confirmation_path(mail.outbox[0]))

    assert response.status_code == 200
    assert b"subscribed" in response.content
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.ACTIVE
    assert subscriber.confirmed_at is not None
    # The confirmed reader can sign in by code at once: account and verified address.
    assert subscriber.user is not None
    assert subscriber.user.email == "new.reader@example.com"
    assert not subscriber.user.has_usable_password()
    assert EmailAddress.objects.filter(
        user=subscriber.user, email="new.reader@example.com", verified=True
    ).exists()
    assert len(mail.outbox) == 2
    welcome = mail.outbox[1]
    assert welcome.subject == "Welcome aboard"
    assert "/unsubscribe/" in welcome.body


def test_following_the_link_twice_confirms_once(client, django_capture_on_commit_callbacks):
    post_signup(client, django_capture_on_commit_callbacks, "twice@example.com")
    path = confirmation_path(mail.outbox[0])
    with django_capture_on_commit_callbacks(execute=True):
        assert client.get(path).status_code == 200
        assert client.get(path).status_code == 200
    assert Subscriber.objects.get().status == Subscriber.Status.ACTIVE
    assert [m.subject for m in mail.outbox].count("Welcome aboard") == 1


def test_a_tampered_confirmation_link_is_refused_with_a_clear_page(
    client, django_capture_on_commit_callbacks
):
    post_signup(client, django_capture_on_commit_callbacks, "tamper@example.com")
    path = confirmation_path(mail.outbox[0])
    tampered = path[:-3] + ("A" if path[-3] != "A" else "B") + path[-2:]

    response = client.get(tampered)

    assert response.status_code == 400
    assert b"not valid" in response.content
    assert Subscriber.objects.get().status == Subscriber.Status.PENDING


def test_a_token_for_another_address_is_refused(client):
    subscriber = SubscriberFactory(email="real@example.com", status=Subscriber.Status.PENDING)
    token = make_confirmation_token(subscriber_id=subscriber.pk, email="attacker@example.com")
    response = client.get(f"/subscribe/confirm/{token}/")
    assert response.status_code == 400
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.PENDING


def test_an_expired_confirmation_link_is_refused_with_a_clear_page(
    client, django_capture_on_commit_callbacks, monkeypatch
):
    post_signup(client, django_capture_on_commit_callbacks, "late@example.com")
    path = confirmation_path(mail.outbox[0])
    four_days_later = time.time() + 4 * 24 * 3600
    monkeypatch.setattr(signing.time, "time", lambda: four_days_later)

    response = client.get(path)

    assert response.status_code == 400
    assert b"expired" in response.content
    assert Subscriber.objects.get().status == Subscriber.Status.PENDING


def test_repeated_signups_create_no_duplicate_and_send_one_confirmation_per_few_minutes(
    client, django_capture_on_commit_callbacks
):
    for email in ["repeat@example.com", "REPEAT@example.com", "repeat@EXAMPLE.com"]:
        assert post_signup(client, django_capture_on_commit_callbacks, email).status_code == 200
    assert Subscriber.objects.count() == 1
    assert len(mail.outbox) == 1

    Subscriber.objects.update(confirmation_sent_at=timezone.now() - timedelta(minutes=6))
    post_signup(client, django_capture_on_commit_callbacks, "repeat@example.com")

    assert Subscriber.objects.count() == 1
    assert len(mail.outbox) == 2


def test_a_signup_exactly_the_resend_interval_after_the_last_confirmation_gets_another(
    monkeypatch, django_capture_on_commit_callbacks
):
    sent = timezone.now()
    for moment, emails in [
        (sent, 1),
        (sent + CONFIRMATION_RESEND_INTERVAL - timedelta(microseconds=1), 1),
        (sent + CONFIRMATION_RESEND_INTERVAL, 2),
    ]:
        monkeypatch.setattr(timezone, "now", lambda moment=moment: moment)
        with django_capture_on_commit_callbacks(execute=True):
            subscribe(email="punctual@example.com", ip=None, source="/subscribe/")
        assert len(mail.outbox) == emails
    assert Subscriber.objects.get().confirmation_sent_at == sent + CONFIRMATION_RESEND_INTERVAL


def test_new_pending_and_active_addresses_get_the_same_answer(
    client, django_capture_on_commit_callbacks
):
    SubscriberFactory(email="active@example.com", status=Subscriber.Status.ACTIVE)
    SubscriberFactory(
        email="pending@example.com",
        status=Subscriber.Status.PENDING,
        confirmation_sent_at=timezone.now(),
    )
    answers = {
        email: post_signup(client, django_capture_on_commit_callbacks, email)
        for email in ["new@example.com", "pending@example.com", "active@example.com"]
    }
    bodies = {(r.status_code, CSRF_RE.sub(b"", r.content)) for r in answers.values()}
    assert len(bodies) == 1
    # Only the new address got mail; the active one was not told anything.
    assert [m.to for m in mail.outbox] == [["new@example.com"]]
    assert Subscriber.objects.get(email="active@example.com").status == "active"


def test_the_honeypot_rejects_bots_without_creating_a_subscriber(
    client, django_capture_on_commit_callbacks
):
    response = post_signup(
        client, django_capture_on_commit_callbacks, "bot@example.com", website="http://spam"
    )
    assert response.status_code == 200
    assert b"Check your inbox" in response.content
    assert not Subscriber.objects.exists()
    assert mail.outbox == []


def test_the_per_ip_rate_limit_rejects_floods_without_creating_subscribers(
    client, django_capture_on_commit_callbacks
):
    limit = signup_views.SIGNUPS_PER_IP
    for n in range(limit):
        response = post_signup(client, django_capture_on_commit_callbacks, f"r{n}@example.com")
        assert response.status_code == 200

    response = post_signup(client, django_capture_on_commit_callbacks, "one-too-many@example.com")

    assert response.status_code == 429
    assert b"Too many" in response.content
    assert not Subscriber.objects.filter(email="one-too-many@example.com").exists()
    assert Subscriber.objects.count() == limit
    # Another network is not affected.
    response = post_signup(
        client, django_capture_on_commit_callbacks, "neighbour@example.com", ip="198.51.100.1"
    )
    assert response.status_code == 200
    assert Subscriber.objects.filter(email="neighbour@example.com").exists()


def test_an_invalid_address_gets_a_clear_error_and_creates_nothing(
    client, django_capture_on_commit_callbacks
):
    for bad in ["not-an-address", "josé@example.com", ""]:
        response = post_signup(client, django_capture_on_commit_callbacks, bad)
        assert response.status_code == 400
        assert b"valid email address" in response.content or b"required" in response.content
    assert not Subscriber.objects.exists()
    assert mail.outbox == []


def test_an_unsubscribed_reader_can_resubscribe_with_a_fresh_opt_in(
    client, django_capture_on_commit_callbacks
):
    subscriber = SubscriberFactory(
        email="back@example.com",
        status=Subscriber.Status.UNSUBSCRIBED,
        unsubscribed_at=timezone.now(),
    )
    post_signup(client, django_capture_on_commit_callbacks, "back@example.com")
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.PENDING
    with django_capture_on_commit_callbacks(execute=True):
        client.get(confirmation_path(mail.outbox[0]))
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.ACTIVE
    assert subscriber.unsubscribed_at is None


def test_a_complained_address_is_never_sent_a_confirmation(
    client, django_capture_on_commit_callbacks
):
    SubscriberFactory(email="spam-button@example.com", status=Subscriber.Status.COMPLAINED)
    response = post_signup(client, django_capture_on_commit_callbacks, "spam-button@example.com")
    assert response.status_code == 200
    assert mail.outbox == []
    assert Subscriber.objects.get().status == Subscriber.Status.COMPLAINED


def test_confirming_lifts_an_old_suppression_entry(client, django_capture_on_commit_callbacks):
    Suppression.objects.create(email_hash=email_hash("again@example.com"), reason="deleted")
    post_signup(client, django_capture_on_commit_callbacks, "again@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        client.get(confirmation_path(mail.outbox[0]))
    assert not Suppression.objects.exists()
    assert Subscriber.objects.get().status == Subscriber.Status.ACTIVE


def test_the_subscribe_page_has_the_form_with_a_honeypot(client):
    response = client.get("/subscribe/")
    assert response.status_code == 200
    # The page's own form, not the footer's (which every page has).
    form = re.search(
        rb'<section class="subscribe-page">.*?(<form .*?</form>)', response.content, re.DOTALL
    )
    assert form, response.content
    assert b'name="email"' in form.group(1)
    assert b'name="website"' in form.group(1)


def test_the_footer_signup_works_without_a_csrf_token_so_anonymous_pages_can_be_shared(
    django_capture_on_commit_callbacks,
):
    client = Client(enforce_csrf_checks=True)
    home = client.get("/")
    assert b"csrfmiddlewaretoken" not in home.content
    assert "csrftoken" not in home.cookies
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/subscribe/", {"email": "footer@example.com", "website": ""})
    assert response.status_code == 200
    assert Subscriber.objects.get().email == "footer@example.com"
    assert len(mail.outbox) == 1


def test_a_signup_posted_by_a_browser_on_another_site_is_refused(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://friends.example"]
    client = Client(enforce_csrf_checks=True)
    data = {"email": "victim@example.com", "website": ""}
    refused = client.post("/subscribe/", data, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
    assert client.post("/subscribe/", data, headers={"Origin": "null"}).status_code == 403
    assert not Subscriber.objects.exists()

    ours = client.post("/subscribe/", data, headers={"Origin": "http://testserver"})
    embedded = client.post(
        "/subscribe/",
        {"email": "friend@example.com", "website": ""},
        headers={"Origin": "https://friends.example"},
    )
    assert ours.status_code == embedded.status_code == 200
    assert Subscriber.objects.count() == 2


def test_a_signup_without_origin_from_a_foreign_referer_is_refused(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://friends.example"]
    client = Client(enforce_csrf_checks=True)
    data = {"email": "victim@example.com", "website": ""}

    for headers in (
        {"Referer": "https://evil.example/page"},
        {"Referer": "https://testserver.evil.example/"},
        {"Referer": "http://testserver@evil.example/"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "cross-site", "Referer": "http://testserver/p/x/"},
    ):
        assert client.post("/subscribe/", data, headers=headers).status_code == 403, headers
    assert not Subscriber.objects.exists()

    for email, headers in (
        ("ours@example.com", {"Referer": "http://testserver/p/an-article/"}),
        ("friend@example.com", {"Referer": "https://friends.example/blog/"}),
        ("same@example.com", {"Sec-Fetch-Site": "same-origin"}),
        ("script@example.com", {}),  # no browser headers at all: no browser form post
    ):
        response = client.post("/subscribe/", {**data, "email": email}, headers=headers)
        assert response.status_code == 200, (email, headers)
    assert Subscriber.objects.count() == 4


def test_the_subscribe_page_and_the_footer_form_do_not_share_element_ids(client):
    body = client.get("/subscribe/").content.decode()
    ids = re.findall(r'\bid="([^"]+)"', body)
    assert body.count('class="subscribe-form"') == 2
    assert len(ids) == len(set(ids)), sorted(ids)


def test_a_refused_address_is_shown_back_escaped(client, django_capture_on_commit_callbacks):
    response = post_signup(client, django_capture_on_commit_callbacks, '"><script>x()</script>')
    assert response.status_code == 400
    assert b"<script>x()" not in response.content
    assert b'value="&quot;&gt;&lt;script&gt;x()&lt;/script&gt;"' in response.content


def test_the_rate_limit_counts_an_ipv6_network_as_one_client(
    client, django_capture_on_commit_callbacks
):
    for n in range(signup_views.SIGNUPS_PER_IP):
        post_signup(
            client,
            django_capture_on_commit_callbacks,
            f"v6-{n}@example.com",
            ip=f"2001:db8::{n + 1}",
        )
    response = post_signup(
        client, django_capture_on_commit_callbacks, "rotated@example.com", ip="2001:db8::ffff:1"
    )
    assert response.status_code == 429
    assert not Subscriber.objects.filter(email="rotated@example.com").exists()


@pytest.mark.parametrize(
    "status",
    [Subscriber.Status.UNSUBSCRIBED, Subscriber.Status.BOUNCED, Subscriber.Status.COMPLAINED],
)
def test_an_old_confirmation_link_does_not_put_a_departed_address_back_on_the_list(
    client, django_capture_on_commit_callbacks, status
):
    post_signup(client, django_capture_on_commit_callbacks, "gone-since@example.com")
    path = confirmation_path(mail.outbox[0])
    Subscriber.objects.update(status=status)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.get(path)

    assert response.status_code == 400
    assert b"no longer valid" in response.content
    assert Subscriber.objects.get().status == status
    assert len(mail.outbox) == 1


def test_the_signup_request_queues_the_confirmation_instead_of_waiting_on_the_mail_server(
    client, django_capture_on_commit_callbacks, monkeypatch
):
    from subscriptions import tasks

    queued: list[int] = []
    monkeypatch.setattr(tasks.send_confirmation_email, "delay", queued.append)
    SubscriberFactory(email="active@example.com", status=Subscriber.Status.ACTIVE)

    for email in ["new@example.com", "active@example.com"]:
        assert post_signup(client, django_capture_on_commit_callbacks, email).status_code == 200

    # No mail left in either request: sending (and its time) happens in the worker.
    assert mail.outbox == []
    assert queued == [Subscriber.objects.get(email="new@example.com").pk]


def test_a_queued_confirmation_is_dropped_if_the_reader_left_meanwhile():
    from subscriptions.services.signup import send_confirmation_email

    pending = SubscriberFactory(status=Subscriber.Status.PENDING)
    gone = SubscriberFactory(status=Subscriber.Status.UNSUBSCRIBED)

    assert send_confirmation_email(subscriber_id=pending.pk) is True
    assert send_confirmation_email(subscriber_id=gone.pk) is False
    assert [m.to for m in mail.outbox] == [[pending.email]]


def test_ipv4_clients_seen_through_an_ipv6_socket_are_counted_one_by_one(
    client, django_capture_on_commit_callbacks
):
    # A server bound to [::] sees IPv4 clients as IPv4-mapped IPv6 addresses.
    for n in range(signup_views.SIGNUPS_PER_IP):
        post_signup(
            client, django_capture_on_commit_callbacks, f"m-{n}@example.com", ip="::ffff:192.0.2.1"
        )
    response = post_signup(
        client, django_capture_on_commit_callbacks, "other@example.com", ip="::ffff:192.0.2.2"
    )
    assert response.status_code == 200
    assert Subscriber.objects.filter(email="other@example.com").exists()
    response = post_signup(
        client, django_capture_on_commit_callbacks, "again@example.com", ip="192.0.2.1"
    )
    assert response.status_code == 429
