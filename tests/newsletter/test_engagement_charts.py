"""The charts of opens and clicks: by day and top links on an article, rates on the home."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import html5lib
import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from newsletter.admin_home import editor_dashboard
from newsletter.models import ClickEvent, Delivery, EmailSend, OpenEvent, TrackedLink
from newsletter.services import engagement, tracking
from newsletter.services.charts import default_date_format
from tests.factories import PublishedArticleFactory, SubscriberFactory
from tests.newsletter.test_admin_charts import charts_of

pytestmark = pytest.mark.django_db

PERSON = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.3"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0"
APPLE_PROXY = "Mozilla/5.0"
XHTML = "{http://www.w3.org/1999/xhtml}"


def emailed(*, title: str, readers: int, days_ago: int) -> tuple:
    """An article emailed `days_ago` days ago (at noon UTC) to `readers` readers."""
    article = PublishedArticleFactory(title=title)
    today = timezone.now().astimezone(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    started = today - timedelta(days=days_ago)
    send = EmailSend.objects.create(
        article=article,
        audience="everyone",
        status=EmailSend.Status.SENT,
        sent_count=readers,
        started_at=started,
    )
    deliveries = [
        Delivery.objects.create(
            send=send, subscriber=SubscriberFactory(), status="sent", sent_at=started
        )
        for _ in range(readers)
    ]
    return article, deliveries, started


def open_by(delivery: Delivery, agent: str = PERSON) -> None:
    response = Client().get(f"/o/{tracking.delivery_token(delivery.pk)}.gif", HTTP_USER_AGENT=agent)
    assert response.status_code == 200


def click_by(delivery: Delivery, url: str, *, head: bool = False) -> None:
    link, _ = TrackedLink.objects.get_or_create(
        article_id=delivery.send.article_id, url=url, defaults={"digest": url[:64]}
    )
    path = (
        f"/r/{tracking.link_token(link_id=link.pk, url=url)}."
        f"{tracking.delivery_token(delivery.pk)}/"
    )
    client = Client()
    response = (client.head if head else client.get)(path, HTTP_USER_AGENT=BROWSER)
    assert response.status_code == 302


def recorded_on(day: datetime) -> None:
    """The events recorded since the last call happened on `day` (as if recorded then)."""
    OpenEvent.objects.filter(at__gt=day + timedelta(hours=1)).update(at=day)
    ClickEvent.objects.filter(at__gt=day + timedelta(hours=1)).update(at=day)


def roll_up() -> None:
    assert engagement.roll_up_events(now=timezone.now() + timedelta(minutes=2)) > 0


@pytest.fixture
def articles():
    """Three articles: two emailed, with people's and machines' opens and clicks over
    several days, rolled up (and one open since, not yet); one never emailed.

    "The Straits", emailed 3 days ago to 4 readers:
      send day: reader 1 opens and clicks /one; Apple's proxy opens reader 2's copy
      next day: reader 3 opens and clicks /two; a scanner HEADs reader 4's /one
      today (not rolled up): reader 4 opens
    "Harbours", emailed yesterday to 2 readers: reader 1 opens; Apple's proxy opens
      reader 2's copy twice.
    """
    straits, (one, two, three, four), sent = emailed(title="The Straits", readers=4, days_ago=3)
    harbours, (first, second), harbours_sent = emailed(title="Harbours", readers=2, days_ago=1)
    PublishedArticleFactory(title="Not emailed")

    open_by(one)
    click_by(one, "https://www.example.org/one")
    open_by(two, APPLE_PROXY)
    recorded_on(sent)
    open_by(three)
    click_by(three, "https://example.net/two")
    click_by(four, "https://www.example.org/one", head=True)
    recorded_on(sent + timedelta(days=1))
    open_by(first)
    open_by(second, APPLE_PROXY)
    open_by(second, APPLE_PROXY)
    recorded_on(harbours_sent)
    roll_up()
    open_by(four)
    return straits, harbours, sent


def change_page(client, article) -> str:
    response = client.get(f"/admin/newsletter/article/{article.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def test_an_articles_page_charts_opens_and_clicks_by_day_since_the_send_and_its_top_links(
    editor_client, articles
):
    straits, _, sent = articles

    charts = charts_of(change_page(editor_client, straits))

    day = [default_date_format((sent + timedelta(days=n)).date()) for n in range(4)]
    # Opened by people, clicked by people, opens by machines, clicks by machines.
    assert charts["Opens and clicks of “The Straits” by day"] == [
        [day[0], "1", "1", "1", "0"],
        [day[1], "1", "1", "0", "1"],
        [day[2], "0", "0", "0", "0"],
        [day[3], "1", "0", "0", "0"],  # today's open, not rolled up yet
    ]
    # The scanner's HEAD of /one is no reader: one reader each, ties by URL.
    assert charts["Top links of “The Straits”, by readers who clicked"] == [
        ["example.net/two", "1"],
        ["example.org/one", "1"],
    ]


def test_the_charts_series_sum_to_the_panels_figures(editor_client, articles):
    straits, _, _ = articles
    figures = engagement.article_engagement(article=straits)
    by_day = engagement.engagement_by_day(article=straits)

    assert sum(by_day.readers_opened) == figures.opened_readers == 3
    assert sum(by_day.readers_clicked) == figures.clicked_readers == 2
    assert sum(by_day.machine_opens) == figures.machine_opens == 1
    assert sum(by_day.machine_clicks) == figures.machine_clicks == 1


def test_the_admin_home_charts_each_emailed_articles_open_and_click_rates_of_people(
    editor_client, articles
):
    response = editor_client.get("/admin/")
    page = response.content.decode()

    charts = charts_of(page)
    title = "Open and click rates of the last 20 articles emailed (people, % of delivered)"
    # Oldest first; "Harbours" has two opens by Apple's proxy, none in its rate.
    assert charts[title] == [["The Straits", "75.0%", "50.0%"], ["Harbours", "50.0%", "0.0%"]]
    [table] = [
        table
        for table in html5lib.parse(page).iter(f"{XHTML}table")
        if "Opened (people)" in "".join(table.itertext()) and table.get("class") != "chart__table"
    ]
    heads = ["".join(cell.itertext()) for cell in table.iter(f"{XHTML}th")]
    rows = {
        "".join(row[0].itertext()): ["".join(cell.itertext()) for cell in row]
        for row in table.iter(f"{XHTML}tr")
        if row[0].tag == f"{XHTML}td"
    }
    opened, clicked, machines = (
        heads.index(name) for name in ("Opened (people)", "Clicked (people)", "By machines")
    )
    straits = rows["The Straits"]
    assert (straits[opened], straits[clicked], straits[machines]) == (
        "3 (75%)",
        "2 (50%)",
        "1 open, 1 click",
    )
    harbours = rows["Harbours"]
    assert (harbours[opened], harbours[clicked], harbours[machines]) == (
        "1 (50%)",
        "0 (0%)",
        "2 opens, 0 clicks",
    )
    assert "Not emailed" in rows["Not emailed"]


def test_machine_opens_and_clicks_never_count_in_the_peoples_rates():
    article, (reader, other), sent = emailed(title="Scanned", readers=2, days_ago=2)
    for _ in range(3):
        open_by(reader, APPLE_PROXY)
    click_by(other, "https://example.org/checked", head=True)
    recorded_on(sent)
    roll_up()
    open_by(other, APPLE_PROXY)  # and one not rolled up yet

    [summary] = engagement.engagement_by_article(article_ids=[article.pk]).values()
    assert (summary.opened_readers, summary.clicked_readers) == (0, 0)
    assert (summary.open_rate, summary.click_rate) == (0.0, 0.0)
    assert (summary.machine_opens, summary.machine_clicks) == (4, 1)
    dashboard = editor_dashboard(now=timezone.now())
    [row] = dashboard.recent
    assert (row.opened, row.clicked) == ("0 (0%)", "0 (0%)")
    assert dashboard.rates_chart is not None
    assert "<td>0.0%</td><td>0.0%</td>" in dashboard.rates_chart.table


def test_an_article_without_a_send_shows_no_opens_chart_and_no_error(editor_client):
    article = PublishedArticleFactory(title="Only on the site")

    page = change_page(editor_client, article)

    assert not any(title.startswith(("Opens and clicks", "Top links")) for title in charts_of(page))
    assert 'id="engagement"' not in page
    assert engagement.engagement_by_day(article=article).days == ()
    assert engagement.engagement_by_article(article_ids=[article.pk]) == {}
    home = editor_client.get("/admin/")
    assert home.status_code == 200
    home_charts = charts_of(home.content.decode())
    assert not any(title.startswith("Open and click rates") for title in home_charts)


def test_an_emailed_article_nobody_opened_charts_zeros_and_no_top_links(editor_client):
    article, _, sent = emailed(title="Quiet", readers=3, days_ago=1)

    charts = charts_of(change_page(editor_client, article))

    assert charts["Opens and clicks of “Quiet” by day"] == [
        [default_date_format(sent.date()), "0", "0", "0", "0"],
        [default_date_format((sent + timedelta(days=1)).date()), "0", "0", "0", "0"],
    ]
    assert not any(title.startswith("Top links") for title in charts)


HOSTILE_TITLE = '<script>alert("title")</script><img src=x onerror=alert(1)>'
HOSTILE_URL = 'https://example.org/"><script>alert("url")</script><img src=x onerror=alert(2)>'


def no_injected_element(page: str | bytes) -> None:
    document = html5lib.parse(page)
    for element in document.iter():
        assert "onerror" not in element.attrib, element
        if element.tag == f"{XHTML}script":
            assert "alert" not in "".join(element.itertext())
    assert not [img for img in document.iter(f"{XHTML}img") if img.get("src") == "x"]


def test_hostile_titles_and_links_are_escaped_in_the_charts(editor_client):
    article, (reader, _), sent = emailed(title=HOSTILE_TITLE, readers=2, days_ago=1)
    open_by(reader)
    click_by(reader, HOSTILE_URL)
    recorded_on(sent)
    roll_up()

    page = change_page(editor_client, article)
    no_injected_element(page)
    charts = charts_of(page)
    assert charts[f"Opens and clicks of “{HOSTILE_TITLE}” by day"][0][1:] == ["1", "1", "0", "0"]
    [[label, readers]] = charts[f"Top links of “{HOSTILE_TITLE}”, by readers who clicked"]
    assert (label, readers) == (HOSTILE_URL.removeprefix("https://")[:39] + "…", "1")

    home = editor_client.get("/admin/").content.decode()
    no_injected_element(home)
    rates = charts_of(home)[
        "Open and click rates of the last 20 articles emailed (people, % of delivered)"
    ]
    assert rates == [[HOSTILE_TITLE[:39] + "…", "50.0%", "50.0%"]]


def count_queries_of_the_home(client) -> int:
    cache.clear()  # the growth charts drawn afresh each time, as on their first request
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/admin/").status_code == 200
    return len(queries)


def test_the_admin_home_reads_the_rates_in_as_many_queries_for_thirty_articles_as_for_two(
    editor_client,
):
    def articles_emailed(count: int, *, days_ago: int) -> None:
        for n in range(count):
            _, (reader, other), sent = emailed(title=f"Article {n}", readers=2, days_ago=days_ago)
            open_by(reader)
            click_by(reader, f"https://example.org/{n}")
            open_by(other, APPLE_PROXY)
            recorded_on(sent)
        roll_up()
        open_by(reader)  # one recent event, read from the raw table

    editor_client.get("/admin/")  # the first request makes the publication's row
    articles_emailed(2, days_ago=40)
    few = count_queries_of_the_home(editor_client)
    articles_emailed(28, days_ago=20)
    many = count_queries_of_the_home(editor_client)

    assert many == few
    rates = editor_dashboard(now=timezone.now()).rates_chart
    assert rates is not None
    assert rates.table.count("<tr>") == 1 + 20  # the head, and the last 20 of 30 articles


def test_the_days_and_totals_are_utc_days_whatever_the_publications_time_zone(settings):
    from tests.newsletter import engagement_scenario

    settings.TIME_ZONE = engagement_scenario.TIME_ZONE
    engagement_scenario.build()

    assert engagement_scenario.figures() == engagement_scenario.EXPECTED
