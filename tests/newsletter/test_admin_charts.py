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
    cache.delete("admin:growth-charts:money")  # as when it expires
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


@pytest.fixture
def writer_client():
    """Signed in to the admin as staff who may write articles and nothing about money
    (a client of its own, beside `editor_client`)."""
    from django.contrib.auth.models import Permission
    from django.test import Client

    from tests.factories import StaffUserFactory

    writer = StaffUserFactory(username="writer", is_superuser=False)
    writer.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="newsletter", codename__endswith="_article"
        )
    )
    client = Client()
    client.force_login(writer)
    return client


def test_staff_who_may_not_see_money_get_the_audience_charts_and_no_revenue(
    writer_client, editor_client
):
    article = PublishedArticleFactory(title="Straits")
    MembershipFactory(source_article_id=article.pk)
    Donation.objects.create(amount=2500, status="paid", source_article_id=article.pk)

    home = charts_of(writer_client.get("/admin/").content.decode())
    page = writer_client.get(f"/admin/newsletter/article/{article.pk}/change/")

    assert set(home) == {
        "Subscribers over the last 12 months",
        "New and lost readers, last 30 days",
    }
    charts = charts_of(page.content.decode())
    assert "Readers “Straits” converted" in charts
    assert "Money “Straits” brought" not in charts
    # An editor who may see memberships and donations gets them, on the same pages.
    assert "Monthly recurring revenue" in charts_of(editor_client.get("/admin/").content.decode())


@pytest.mark.parametrize("object_id", ["²", "٣", "1²"])
def test_an_article_id_in_other_digits_is_not_found_rather_than_an_error(editor_client, object_id):
    PublishedArticleFactory()

    response = editor_client.get(f"/admin/newsletter/article/{object_id}/change/", follow=True)

    assert response.status_code in (200, 404)
    assert response.status_code != 500
