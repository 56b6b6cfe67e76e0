"""The admin's charts: growth and money on the home page, conversions on an article."""

from __future__ import annotations

import html5lib
import pytest

from subscriptions.models import Donation
from tests.factories import MembershipFactory, PublishedArticleFactory, SubscriberFactory

pytestmark = pytest.mark.django_db

XHTML = "{http://www.w3.org/1999/xhtml}"
SVG = "{http://www.w3.org/2000/svg}"


def charts_of(page: str) -> dict[str, list[list[str]]]:
    """Each chart of the page (its SVG's title) and the rows of its table of numbers."""
    tree = html5lib.parse(page)
    found = {}
    for figure in tree.iter(f"{XHTML}figure"):
        [svg] = list(figure.iter(f"{SVG}svg"))
        assert svg.get("role") == "img"
        title = next(svg.iter(f"{SVG}title")).text
        rows = [
            ["".join(cell.itertext()) for cell in row]
            for body in figure.iter(f"{XHTML}tbody")
            for row in body.iter(f"{XHTML}tr")
        ]
        found[title] = rows
    return found


def test_the_admin_home_charts_subscribers_mrr_donations_and_new_and_lost(editor_client):
    SubscriberFactory.create_batch(2)
    MembershipFactory()
    Donation.objects.create(amount=1234, status="paid", paid_at="2026-01-05T12:00:00Z")

    charts = charts_of(editor_client.get("/admin/").content.decode())

    assert set(charts) == {
        "Subscribers over the last 12 months",
        "Monthly recurring revenue",
        "Donations by month, net of refunds",
        "New and lost readers, last 30 days",
    }
    today = charts["Subscribers over the last 12 months"][-1]
    assert today[1:] == ["2", "1"]  # free, paid (the member's reader is on the list too)
    assert charts["Monthly recurring revenue"][-1][1] == "8.00"
    assert len(charts["New and lost readers, last 30 days"]) == 30
    assert charts["New and lost readers, last 30 days"][-1][1:] == ["3", "0"]


def test_the_home_pages_charts_are_drawn_at_most_every_few_minutes(editor_client):
    from django.core.cache import cache

    SubscriberFactory()
    first = charts_of(editor_client.get("/admin/").content.decode())
    SubscriberFactory()
    again = charts_of(editor_client.get("/admin/").content.decode())
    assert again == first  # the copy of a moment ago
    cache.delete("admin:growth-charts")  # as when it expires
    later = charts_of(editor_client.get("/admin/").content.decode())
    assert later["Subscribers over the last 12 months"][-1][1] == "2"


def test_an_articles_admin_page_charts_what_it_converted(editor_client):
    article = PublishedArticleFactory(title="The <Straits>")
    SubscriberFactory.create_batch(3, source_article_id=article.pk)
    MembershipFactory(source_article_id=article.pk)
    Donation.objects.create(amount=2500, status="paid", source_article_id=article.pk)

    page = editor_client.get(f"/admin/newsletter/article/{article.pk}/change/").content.decode()

    charts = charts_of(page)
    assert charts["Readers “The <Straits>” converted"] == [
        ["Signed up", "3"],
        ["Upgraded to paid", "1"],
        ["Donated", "1"],
    ]
    assert charts["Money “The <Straits>” brought"] == [
        ["Donated (USD)", "25.00"],
        ["MRR of its upgrades (USD)", "8.00"],
    ]
    assert "<Straits>" not in page  # escaped everywhere
