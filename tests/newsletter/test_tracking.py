"""Opens and clicks: the pixel, the redirect, readers told from machines, the figures."""

import email
import email.policy
import json
from datetime import timedelta
from urllib.parse import quote, urlsplit

import html5lib
import hypothesis
import pytest
from django.core import mail
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from django.utils.encoding import iri_to_uri
from hypothesis import strategies as st

from newsletter.models import (
    ArticleEngagementDay,
    ClickEvent,
    Delivery,
    EmailSend,
    Engagement,
    LinkEngagementDay,
    MachineReason,
    OpenEvent,
    TrackedLink,
)
from newsletter.services import engagement, tracking
from newsletter.services.publishing import publish_article
from publication.models import Publication
from tests import processes
from tests.factories import ArticleFactory, SubscriberFactory

pytestmark = pytest.mark.django_db

PERSON = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.3"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0"
BODY = (
    '<p>Read <a href="https://example.org/report?a=1&amp;b=2">the report</a>, '
    '<a href="https://example.net/map">the map</a> and '
    '<a href="https://example.com/data">the data</a>.</p>'
)


@pytest.fixture
def sent(settings):
    """An article sent an hour ago to two readers."""
    article = ArticleFactory(body=BODY)
    email_send = EmailSend.objects.create(
        article=article, audience="everyone", status=EmailSend.Status.SENT, sent_count=2
    )
    an_hour_ago = timezone.now() - timedelta(hours=1)
    deliveries = [
        Delivery.objects.create(
            send=email_send, subscriber=SubscriberFactory(), status="sent", sent_at=an_hour_ago
        )
        for _ in range(2)
    ]
    return article, deliveries


def pixel(delivery, **extra):
    token = tracking.delivery_token(delivery.pk)
    return Client().get(f"/o/{token}.gif", **extra)


def link_url(article, url, delivery):
    link, _ = TrackedLink.objects.get_or_create(article=article, url=url, defaults={"digest": url})
    token = tracking.link_token(link_id=link.pk, url=url)
    return f"/r/{token}.{tracking.delivery_token(delivery.pk)}/"


def test_opens_by_a_person_by_apples_proxy_and_by_a_prefetch_are_counted_apart(sent):
    article, (reader, other) = sent
    response = pixel(reader, HTTP_USER_AGENT=PERSON)
    assert response.status_code == 200
    assert response["Content-Type"] == "image/gif"
    assert "no-store" in response["Cache-Control"]
    assert response.content.startswith(b"GIF89a")
    pixel(reader, HTTP_USER_AGENT=PERSON)  # the same reader again: one reader
    pixel(other, HTTP_USER_AGENT="Mozilla/5.0")  # Apple's proxy by its agent
    pixel(other, HTTP_USER_AGENT=PERSON, REMOTE_ADDR="17.58.100.4")  # by its network
    Delivery.objects.filter(pk=other.pk).update(sent_at=timezone.now())
    pixel(other, HTTP_USER_AGENT=PERSON)  # seconds after delivery: a prefetch

    reasons = sorted(OpenEvent.objects.values_list("delivery_id", "reason"))
    assert reasons == sorted(
        [
            (reader.pk, ""),
            (reader.pk, ""),
            (other.pk, MachineReason.APPLE_PROXY),
            (other.pk, MachineReason.APPLE_PROXY),
            (other.pk, MachineReason.PREFETCH),
        ]
    )
    reader.refresh_from_db()
    other.refresh_from_db()
    assert reader.opened_at is not None
    assert other.opened_at is None
    figures = engagement.article_engagement(article=article)
    assert (figures.delivered, figures.opened_readers, figures.human_opens) == (2, 1, 2)
    assert figures.machine_opens == 3
    assert engagement.opens_sentence(figures) == (
        "Opened by 1 reader (50%), and 3 more opens by mail-privacy proxies and scanners"
    )


def test_a_tampered_pixel_answers_400_and_records_nothing(sent):
    _, (reader, _) = sent
    token = tracking.delivery_token(reader.pk)
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert Client().get(f"/o/{forged}.gif").status_code == 400
    assert not OpenEvent.objects.exists()


def _last_character_changed(token: str) -> str:
    """The token with its last character replaced by another (never by itself: a token
    that happens to end in the replacement would otherwise stay valid)."""
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def test_a_click_redirects_only_to_the_signed_url_and_a_tampered_token_answers_400(sent):
    article, (reader, _) = sent
    url = "https://example.org/report?a=1&b=2#part-2"
    path = link_url(article, url, reader)

    response = Client().get(path, HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 302
    assert response["Location"] == url
    assert "no-store" in response["Cache-Control"]
    assert ClickEvent.objects.get().engagement == Engagement.HUMAN

    link_part, mac, delivery_part = path.removeprefix("/r/").removesuffix("/").split(".")
    elsewhere = tracking._b64(f"{TrackedLink.objects.get().pk}:https://evil.example/".encode())
    for forged in (
        f"{elsewhere}.{mac}.{delivery_part}",  # another URL under the link's signature
        f"{link_part}.{mac}.{_last_character_changed(tracking.delivery_token(reader.pk + 1))}",
        f"{link_part}.{_last_character_changed(mac)}.{delivery_part}",
        "not-a-token",
    ):
        response = Client().get(f"/r/{forged}/", HTTP_USER_AGENT=BROWSER)
        assert response.status_code == 400, forged
        assert "Location" not in response
    assert ClickEvent.objects.count() == 1


def test_scanner_bursts_head_requests_and_scanner_agents_are_counted_apart(sent):
    article, (reader, scanned) = sent
    client = Client()
    client.get(link_url(article, "https://example.org/one", reader), HTTP_USER_AGENT=BROWSER)
    # A security gateway follows every link of the other reader's copy at once.
    for url in ("https://example.org/one", "https://example.net/two", "https://example.com/3"):
        client.get(link_url(article, url, scanned), HTTP_USER_AGENT=BROWSER)
    client.head(link_url(article, "https://example.org/one", scanned), HTTP_USER_AGENT=BROWSER)
    client.get(
        link_url(article, "https://example.org/one", scanned),
        HTTP_USER_AGENT="Mozilla/5.0 (compatible; Barracuda Sentinel)",
    )

    reasons = sorted(ClickEvent.objects.filter(delivery=scanned).values_list("reason", flat=True))
    assert reasons == sorted(["burst"] * 3 + ["head", "scanner"])
    assert ClickEvent.objects.get(delivery=reader).engagement == Engagement.HUMAN
    scanned.refresh_from_db()
    assert scanned.clicked_at is None
    figures = engagement.article_engagement(article=article)
    assert (figures.clicked_readers, figures.human_clicks, figures.machine_clicks) == (1, 1, 5)
    by_url = {link.url: link for link in figures.links}
    assert by_url["https://example.org/one"].readers == 1
    assert by_url["https://example.org/one"].machine_clicks == 3
    assert by_url["https://example.net/two"].readers == 0


def test_rollups_keep_the_figures_and_retention_deletes_only_old_raw_events(sent, settings):
    article, (reader, other) = sent
    pixel(reader, HTTP_USER_AGENT=PERSON)
    pixel(other, HTTP_USER_AGENT="Mozilla/5.0")
    Client().get(link_url(article, "https://example.org/one", reader), HTTP_USER_AGENT=BROWSER)
    Client().get(link_url(article, "https://example.org/one", reader), HTTP_USER_AGENT=BROWSER)
    Client().get(link_url(article, "https://example.net/two", other), HTTP_USER_AGENT=BROWSER)
    before = engagement.article_engagement(article=article)

    # Not yet settled: nothing rolled.
    assert engagement.roll_up_events() == 0
    later = timezone.now() + timedelta(minutes=2)
    assert engagement.roll_up_events(now=later) == 5
    assert engagement.roll_up_events(now=later) == 0  # safe to run twice
    day = ArticleEngagementDay.objects.get(article=article)
    assert (day.human_opens, day.machine_opens, day.readers_opened) == (1, 1, 1)
    assert (day.human_clicks, day.readers_clicked) == (3, 2)
    links = LinkEngagementDay.objects.order_by("link__url")
    assert [(d.link.url, d.readers, d.human_clicks) for d in links] == [
        ("https://example.net/two", 1, 1),
        ("https://example.org/one", 1, 2),
    ]
    assert engagement.article_engagement(article=article) == before
    assert before.links[0].url == "https://example.org/one"
    assert (before.links[0].readers, before.links[0].human_clicks) == (1, 2)

    # A newer open after the roll-up is added from the raw events.
    pixel(other, HTTP_USER_AGENT=PERSON)
    assert engagement.article_engagement(article=article).opened_readers == 2

    settings.TRACKING_RETENTION_DAYS = 30
    assert engagement.expire_events(now=timezone.now() + timedelta(days=10)) == 0
    deleted = engagement.expire_events(now=timezone.now() + timedelta(days=31))
    assert deleted == 6
    assert not OpenEvent.objects.exists() and not ClickEvent.objects.exists()
    after = engagement.article_engagement(article=article)
    assert (after.opened_readers, after.machine_opens, after.clicked_readers) == (2, 1, 2)
    assert after.links == before.links


@pytest.fixture(params=["redis", "embedded"])
def cache_backend(request, settings):
    if request.param == "embedded":
        yield request.param
        return
    with processes.flushed_redis(processes.redis_database_url(6)) as url:
        settings.CACHES = {
            "default": {"BACKEND": "config.cache.SharedClientRedisCache", "LOCATION": url}
        }
        yield request.param


def test_hits_are_buffered_in_redis_and_written_at_once_without_it(sent, cache_backend):
    _, (reader, _) = sent
    pixel(reader, HTTP_USER_AGENT=PERSON)
    if cache_backend == "redis":
        assert not OpenEvent.objects.exists()
        assert tracking.flush_buffered_events() == 1
        assert tracking.flush_buffered_events() == 0
    else:
        assert tracking.flush_buffered_events() == 0
    assert OpenEvent.objects.get().engagement == Engagement.HUMAN


def sent_messages(article, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        publish_article(article=article)
    return {
        m.to[0]: email.message_from_bytes(m.message().as_bytes(), policy=email.policy.default)
        for m in mail.outbox
    }


def html_of(message):
    return message.get_body(preferencelist=("html",)).get_content()


def html_links(message):
    html = html_of(message)
    document = html5lib.parse(html, namespaceHTMLElements=False)
    hrefs = [a.get("href") for a in document.iter("a")]
    images = [img.get("src") for img in document.iter("img")]
    return hrefs, images


def test_a_tracked_email_carries_a_pixel_and_redirects_but_never_for_unsubscribing(
    django_capture_on_commit_callbacks,
):
    reader = SubscriberFactory()
    article = ArticleFactory(body=BODY)
    message = sent_messages(article, django_capture_on_commit_callbacks)[reader.email]
    hrefs, images = html_links(message)
    delivery = Delivery.objects.get(subscriber=reader)

    redirects = [h for h in hrefs if urlsplit(h).path.startswith("/r/")]
    targets = {tracking.click_target(urlsplit(h).path[3:-1]) for h in redirects}
    assert {t.url for t in targets} >= {
        "https://example.org/report?a=1&b=2",
        "https://example.net/map",
        "https://example.com/data",
    }
    assert {t.delivery_id for t in targets} == {delivery.pk}
    unsubscribe = [h for h in hrefs if "/unsubscribe/" in h]
    assert unsubscribe and all("/r/" not in h for h in unsubscribe)
    assert "/r/" not in message["List-Unsubscribe"]
    pixels = [src for src in images if urlsplit(src).path.startswith("/o/")]
    assert len(pixels) == 1
    assert tracking.open_token_delivery(urlsplit(pixels[0]).path[3:]) == delivery.pk
    assert "Privacy: this email counts that it was opened" in html_of(message)
    text = message.get_body(preferencelist=("plain",)).get_content()
    assert "https://example.net/map" in text  # plain-text links stay as written


def test_tracking_off_means_no_pixel_and_no_rewritten_link(django_capture_on_commit_callbacks):
    publication = Publication.load()
    publication.track_engagement = False
    publication.save()
    reader = SubscriberFactory()
    message = sent_messages(ArticleFactory(body=BODY), django_capture_on_commit_callbacks)[
        reader.email
    ]
    hrefs, images = html_links(message)
    assert "https://example.org/report?a=1&b=2" in hrefs
    assert not [h for h in hrefs if "/r/" in h]
    assert not [src for src in images if "/o/" in src]
    assert "Privacy: this email counts" not in html_of(message)


def test_a_reader_who_opted_out_gets_an_email_without_pixel_or_redirects(
    django_capture_on_commit_callbacks,
):
    counted = SubscriberFactory()
    private = SubscriberFactory(tracking_opt_out=True)
    messages = sent_messages(ArticleFactory(body=BODY), django_capture_on_commit_callbacks)

    counted_hrefs, counted_images = html_links(messages[counted.email])
    private_hrefs, private_images = html_links(messages[private.email])
    assert any("/r/" in h for h in counted_hrefs)
    assert any("/o/" in src for src in counted_images)
    assert not any("/r/" in h for h in private_hrefs)
    assert not any("/o/" in src for src in private_images)
    assert "https://example.net/map" in private_hrefs


def test_the_export_holds_the_readers_opens_and_clicks_and_deletion_removes_them(sent):
    article, (reader, other) = sent
    pixel(reader, HTTP_USER_AGENT=PERSON)
    pixel(other, HTTP_USER_AGENT=PERSON)
    Client().get(link_url(article, "https://example.org/one", reader), HTTP_USER_AGENT=BROWSER)

    exported = tracking.export_engagement_of(subscriber=reader.subscriber)
    assert [o["counted_as"] for o in exported["opens"]] == ["human"]
    assert exported["opens"][0]["article_title"] == article.title
    assert [c["url"] for c in exported["clicks"]] == ["https://example.org/one"]

    assert tracking.erase_engagement_of(subscriber=reader.subscriber) == 2
    assert not OpenEvent.objects.filter(delivery=reader).exists()
    assert not ClickEvent.objects.filter(delivery=reader).exists()
    assert OpenEvent.objects.filter(delivery=other).count() == 1
    assert tracking.export_engagement_of(subscriber=reader.subscriber) == {
        "opens": [],
        "clicks": [],
    }


def test_send_status_prints_readers_and_machines(sent, capsys):
    article, (reader, other) = sent
    pixel(reader, HTTP_USER_AGENT=PERSON)
    pixel(other, HTTP_USER_AGENT="Mozilla/5.0")
    Client().get(link_url(article, "https://example.org/one", other), HTTP_USER_AGENT=BROWSER)

    call_command("send_status", article.slug)
    out = capsys.readouterr().out
    assert "opened: 1 readers (50%), machines: 1" in out
    assert "clicked: 1 readers (50%), machines: 0" in out
    assert "https://example.org/one: 1 readers, 1 clicks, machines: 0" in out


def test_the_redirect_location_is_the_url_as_an_iri(sent):
    article, (reader, _) = sent
    url = "https://example.org/straße?q=ö&x='\"="
    response = Client().get(link_url(article, url, reader), HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 302
    assert response["Location"] == iri_to_uri(url)


@pytest.fixture
def signed_in_reader(client, sent):
    from tests.factories import UserFactory

    _, (delivery, _) = sent
    subscriber = delivery.subscriber
    user = UserFactory(email=subscriber.email)
    subscriber.user = user
    subscriber.save()
    client.force_login(user)
    return client, subscriber


def test_a_reader_opts_out_on_their_account_page_and_back_in(signed_in_reader):
    client, subscriber = signed_in_reader
    assert b"Stop counting my opens and clicks" in client.get("/account/").content

    response = client.post("/account/tracking/", {"enabled": ""})
    assert response.status_code == 302
    subscriber.refresh_from_db()
    assert subscriber.tracking_opt_out is True
    assert b"Count my opens and clicks" in client.get("/account/").content

    client.post("/account/tracking/", {"enabled": "on"})
    subscriber.refresh_from_db()
    assert subscriber.tracking_opt_out is False


def test_the_account_export_has_the_opens_and_clicks_and_deletion_erases_them(
    signed_in_reader, sent
):
    client, _ = signed_in_reader
    article, (delivery, other) = sent
    pixel(delivery, HTTP_USER_AGENT=PERSON)
    pixel(other, HTTP_USER_AGENT=PERSON)
    Client().get(link_url(article, "https://example.org/one", delivery), HTTP_USER_AGENT=BROWSER)

    data = json.loads(client.get("/account/export/").content)
    assert len(data["engagement"]["opens"]) == 1
    assert data["engagement"]["clicks"][0]["url"] == "https://example.org/one"

    client.post("/account/delete/", {"confirm": "on"})
    assert not Delivery.objects.filter(pk=delivery.pk).exists()
    assert list(OpenEvent.objects.values_list("delivery_id", flat=True)) == [other.pk]
    assert not ClickEvent.objects.exists()


def test_the_articles_admin_page_shows_readers_machines_and_clicks_per_link(sent, client):
    from tests.factories import StaffUserFactory

    article, (reader, other) = sent
    pixel(reader, HTTP_USER_AGENT=PERSON)
    pixel(other, HTTP_USER_AGENT="Mozilla/5.0")
    Client().get(link_url(article, "https://example.org/one", reader), HTTP_USER_AGENT=BROWSER)
    client.force_login(StaffUserFactory(is_superuser=True))

    response = client.get(f"/admin/newsletter/article/{article.pk}/change/")
    assert response.status_code == 200
    document = html5lib.parse(response.content, namespaceHTMLElements=False)
    panel = document.find(".//fieldset[@id='engagement']")
    assert panel is not None
    text = " ".join("".join(panel.itertext()).split())
    assert (
        "Opened by 1 reader (50%), and 1 more opens by mail-privacy proxies and scanners." in text
    )
    assert "Clicked by 1 reader (50%)." in text
    rows = [
        [" ".join("".join(cell.itertext()).split()) for cell in row]
        for row in panel.findall(".//table[2]/tbody/tr")
    ]
    assert rows == [["https://example.org/one", "1", "1", "0"]]


def test_a_burst_within_one_flushed_batch_is_counted_apart_and_a_later_reader_kept(sent):
    article, (reader, scanned) = sent
    links = [
        TrackedLink.objects.create(article=article, url=f"https://example.org/{i}", digest=str(i))
        for i in range(3)
    ]
    now = timezone.now().timestamp()
    hits = [
        # The gateway: three links of one copy within half a second.
        *(
            tracking.Hit(scanned.pk, link.pk, now + i * 0.2, BROWSER, "198.51.100.7")
            for i, link in enumerate(links)
        ),
        # The reader of that copy, a minute later: a person.
        tracking.Hit(scanned.pk, links[0].pk, now + 60, BROWSER, "203.0.113.5"),
        tracking.Hit(reader.pk, links[1].pk, now + 1, BROWSER, "203.0.113.9"),
        tracking.Hit(reader.pk, 0, now + 2, PERSON, "203.0.113.9"),
        tracking.Hit(reader.pk, 0, now + 1.5, PERSON, "203.0.113.9"),
    ]
    assert tracking.record_events(hits) == 7

    engagements = list(
        ClickEvent.objects.filter(delivery=scanned).order_by("at").values_list("reason", flat=True)
    )
    assert engagements == ["burst", "burst", "burst", ""]
    scanned.refresh_from_db()
    reader.refresh_from_db()
    assert scanned.clicked_at.timestamp() == pytest.approx(now + 60)
    assert reader.clicked_at.timestamp() == pytest.approx(now + 1)
    assert reader.opened_at.timestamp() == pytest.approx(now + 1.5)
    figures = engagement.article_engagement(article=article)
    assert (figures.clicked_readers, figures.machine_clicks) == (2, 3)


def test_hits_that_cannot_reach_redis_are_kept_for_the_next_push(sent, settings):
    _, (reader, _) = sent
    settings.TRACKING_PUSH_INTERVAL = 3600  # pushed by hand below, not by the thread
    unreachable = f"redis://127.0.0.1:{processes.free_port()}/0"
    settings.CACHES = {
        "default": {"BACKEND": "config.cache.SharedClientRedisCache", "LOCATION": unreachable}
    }
    tracking._outbox.push()  # nothing left over from another test
    tracking.record(tracking.Hit(reader.pk, 0, timezone.now().timestamp(), PERSON, "203.0.113.1"))
    assert tracking._outbox.push() == 0  # Redis is down: kept

    with processes.flushed_redis(processes.redis_database_url(6)) as url:
        settings.CACHES = {
            "default": {"BACKEND": "config.cache.SharedClientRedisCache", "LOCATION": url}
        }
        # The push (the outbox's thread's or the flush's own) now reaches Redis.
        assert tracking.flush_buffered_events() == 1
    assert OpenEvent.objects.get().delivery_id == reader.pk


@pytest.mark.parametrize(
    "path",
    [
        "/o/ééééééééééééAQ.gif",
        "/o/AAAAAAAAAAAAé.gif",
        "/r/{link}.éééééééééééé/",
        "/r/{link}.ééééééééééééAQ/",
        "/r/é.{mac}.{delivery}/",
        "/r/{payload}.éééééééééééé.{delivery}/",
    ],
)
def test_a_token_with_non_ascii_text_answers_400_not_a_server_error(sent, path):
    article, (reader, _) = sent
    valid = link_url(article, "https://example.org/report", reader)
    payload, mac, delivery = valid.removeprefix("/r/").removesuffix("/").split(".")
    response = Client().get(
        path.format(link=f"{payload}.{mac}", payload=payload, mac=mac, delivery=delivery),
        HTTP_USER_AGENT=BROWSER,
    )
    assert response.status_code == 400
    assert "Location" not in response
    assert not OpenEvent.objects.exists() and not ClickEvent.objects.exists()


@hypothesis.settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(token=st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_any_text_as_a_token_is_refused_and_never_a_server_error(sent, token):
    assert tracking.token_delivery(token) is None
    assert tracking.open_token_delivery(token) is None
    assert tracking.click_target(token) is None
    client = Client()
    for path in (f"/o/{quote(token, safe='')}.gif", f"/r/{quote(token, safe='')}/"):
        response = client.get(path, HTTP_USER_AGENT=BROWSER)
        assert response.status_code in (400, 404), path
        assert "Location" not in response
    assert not OpenEvent.objects.exists() and not ClickEvent.objects.exists()


AN_HOUR_AGO = timezone.now() - timedelta(hours=1)

READERS_AGENTS = [
    PERSON,
    BROWSER,
    # A CUBOT phone's Chrome: "bot" inside the maker's name is not a bot.
    "Mozilla/5.0 (Linux; Android 11; CUBOT KINGKONG 7 Build/RP1A.200720.011) "
    "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.210 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/119.0 Mobile Safari/537.36 MyJava/2.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0 Safari/537.36 Edg/120.0 (Robotics lab)",
]
MACHINES_AGENTS = [
    "",
    "   ",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (compatible; AhrefsBot/7.0; +http://ahrefs.com/robot/)",
    "Mozilla/5.0 (compatible; Barracuda Sentinel)",
    "Java/17.0.2",
    "Apache-HttpClient/4.5 Java/1.8.0_151",
    "python-requests/2.31.0",
    "curl/8.4.0",
    "Wget/1.21.4",
    "Go-http-client/1.1",
    "okhttp/4.12.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/120.0.0.0 Safari/537.36",
]


@pytest.mark.parametrize("user_agent", READERS_AGENTS)
def test_real_readers_agents_are_people_for_opens_and_clicks(user_agent):
    assert tracking.classify_click(user_agent=user_agent, method="GET") == MachineReason.NONE
    reason = tracking.classify_open(
        user_agent=user_agent, ip="198.51.100.7", at=timezone.now(), sent_at=AN_HOUR_AGO
    )
    assert reason == MachineReason.NONE


@pytest.mark.parametrize("user_agent", MACHINES_AGENTS)
def test_scanner_library_and_missing_agents_are_machines_for_opens_and_clicks(user_agent):
    assert tracking.classify_click(user_agent=user_agent, method="GET") == MachineReason.SCANNER
    reason = tracking.classify_open(
        user_agent=user_agent, ip="198.51.100.7", at=timezone.now(), sent_at=AN_HOUR_AGO
    )
    assert reason == MachineReason.SCANNER


@pytest.mark.parametrize("user_agent", ["Mozilla/5.0", " mozilla/5.0 ", "MOZILLA/5.0\t"])
def test_apples_bare_agent_is_known_whatever_its_case_and_surrounding_space(user_agent):
    reason = tracking.classify_open(
        user_agent=user_agent, ip="198.51.100.7", at=timezone.now(), sent_at=AN_HOUR_AGO
    )
    assert reason == MachineReason.APPLE_PROXY


@pytest.mark.parametrize("ip", ["17.1.2.3", "::ffff:17.1.2.3", "::FFFF:11.1.2.3"])
def test_apples_relays_are_known_by_ipv4_and_ipv4_mapped_addresses(ip):
    expected = ip.lower() != "::ffff:11.1.2.3"
    assert tracking.is_apple_proxy_address(ip) is expected


def test_a_head_request_for_the_pixel_is_a_machine_not_an_open(sent):
    _, (reader, _) = sent
    token = tracking.delivery_token(reader.pk)
    response = Client().head(f"/o/{token}.gif", HTTP_USER_AGENT=PERSON)
    assert response.status_code == 200
    assert OpenEvent.objects.get().reason == MachineReason.HEAD
    reader.refresh_from_db()
    assert reader.opened_at is None


def test_the_sites_account_sign_in_and_unsubscribe_links_are_never_tracked(
    django_capture_on_commit_callbacks, settings
):
    site = settings.SITE_URL
    own = [f"{site}/account/tracking/", f"{site}/Account", f"{site}/accounts/login/"]
    body = "".join(f'<p><a href="{url}">mine</a></p>' for url in own)
    body += f'<p><a href="{site}/accountants/">an article</a></p>'
    reader = SubscriberFactory()
    article = ArticleFactory(body=body)
    message = sent_messages(article, django_capture_on_commit_callbacks)[reader.email]
    hrefs, _ = html_links(message)

    manage = html5lib.parse(html_of(message), namespaceHTMLElements=False)
    (footer_link,) = [
        a.get("href") for a in manage.iter("a") if a.text == "Manage your subscription"
    ]
    assert footer_link == f"{site}/account/"
    for url in own:
        assert url in hrefs
    redirected = [
        tracking.click_target(urlsplit(h).path[3:-1]).url
        for h in hrefs
        if urlsplit(h).path.startswith("/r/")
    ]
    assert f"{site}/accountants/" in redirected
    assert not [url for url in redirected if "/account/" in url or "/unsubscribe/" in url]


def test_a_link_with_spaces_around_its_address_is_tracked_as_the_address(
    django_capture_on_commit_callbacks,
):
    reader = SubscriberFactory()
    article = ArticleFactory(
        body='<p><a href=" https://example.com/x ">x</a> <a href="\nhttps://example.org/y\t">y</a></p>'
    )
    message = sent_messages(article, django_capture_on_commit_callbacks)[reader.email]
    hrefs, _ = html_links(message)
    redirected = {
        tracking.click_target(urlsplit(h).path[3:-1]).url
        for h in hrefs
        if urlsplit(h).path.startswith("/r/")
    }
    assert {"https://example.com/x", "https://example.org/y"} <= redirected
    assert not [h for h in hrefs if "example.com/x" in h or "example.org/y" in h]


def test_the_pixel_and_the_redirect_carry_the_security_headers(sent, settings):
    article, (reader, _) = sent
    settings.SECURE_HSTS_SECONDS = 3600
    client = Client()
    token = tracking.delivery_token(reader.pk)
    click = link_url(article, "https://example.org/report", reader)
    for path in (f"/o/{token}.gif", click, "/o/forged.gif", "/r/forged/"):
        response = client.get(path, secure=True, HTTP_USER_AGENT=BROWSER)
        assert response["X-Content-Type-Options"] == "nosniff", path
        assert response["Strict-Transport-Security"] == "max-age=3600", path
        assert response["Referrer-Policy"] == "no-referrer", path
    assert "Strict-Transport-Security" not in client.get(f"/o/{token}.gif")  # not over http


def test_with_ssl_redirect_on_the_pixel_and_the_redirect_go_to_https_first(sent, settings):
    article, (reader, _) = sent
    settings.SECURE_SSL_REDIRECT = True
    client = Client()
    token = tracking.delivery_token(reader.pk)
    for path in (f"/o/{token}.gif", link_url(article, "https://example.org/report", reader)):
        response = client.get(path, HTTP_USER_AGENT=BROWSER)
        assert response.status_code == 301
        assert response["Location"] == f"https://testserver{path}"
    assert not OpenEvent.objects.exists() and not ClickEvent.objects.exists()
    assert client.get(f"/o/{token}.gif", secure=True).status_code == 200
    assert OpenEvent.objects.count() == 1


def test_both_footers_say_what_is_read_how_long_it_is_held_and_when_records_go(
    django_capture_on_commit_callbacks, settings
):
    settings.TRACKING_RETENTION_DAYS = 183
    reader = SubscriberFactory()
    article = ArticleFactory(body=BODY)
    message = sent_messages(article, django_capture_on_commit_callbacks)[reader.email]
    text = message.get_body(preferencelist=("plain",)).get_content()
    document = html5lib.parse(html_of(message), namespaceHTMLElements=False)
    html = " ".join("".join(p.itertext()) for p in document.iter("p"))
    for part in (html, " ".join(text.split())):
        assert "no address or device is kept" not in part
        assert "your IP address and your mail program's name are read" in part
        assert "held until the record is written, normally a few seconds;" in part
        assert "not kept in the record or in the site's logs" in part
        assert "The records go after 6 months." in part


def test_a_refused_token_is_not_logged_with_its_path(sent, caplog):
    _, (reader, _) = sent
    forged = f"/r/abc.def.{tracking.delivery_token(reader.pk)}/"
    with caplog.at_level("DEBUG", logger="django"):
        assert Client().get(forged).status_code == 400
        assert Client().get("/o/forged.gif").status_code == 400
    assert not [r for r in caplog.records if "/r/" in r.getMessage() or "/o/" in r.getMessage()]
