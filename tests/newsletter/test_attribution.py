"""Conversions credited to the article a reader came from: the article page's forms and
links, `?ref=` on shared links, the email's upgrade button, through Checkout and the
signed webhook; bogus refs ignored; the page cache untouched by refs."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import html5lib
import pytest
from django.core import mail

from newsletter.models import Article, Delivery
from newsletter.services.attribution import article_conversions
from newsletter.services.email_rendering import render_article_email
from publication.models import Publication
from subscriptions.models import Donation, Membership, Subscriber
from subscriptions.services.attribution import source_for_ref
from subscriptions.services.tokens import make_unsubscribe_token, read_confirmation_source
from tests.factories import ArticleFactory, PlanFactory, PublishedArticleFactory, UserFactory
from tests.subscriptions.stripe_support import StripeWebhooks

pytestmark = pytest.mark.django_db

XHTML = "{http://www.w3.org/1999/xhtml}"


def forms_of(page: str) -> list[dict[str, str]]:
    """Each form of the page (parsed by html5lib, as a browser would) as its action and
    the values of its hidden inputs."""
    tree = html5lib.parse(page)
    found = []
    for form in tree.iter(f"{XHTML}form"):
        fields = {"action": form.get("action", "")}
        for field in form.iter(f"{XHTML}input"):
            if field.get("type") == "hidden" and field.get("name"):
                fields[field.get("name")] = field.get("value", "")
        found.append(fields)
    return found


def links_of(page: str) -> list[str]:
    return [a.get("href", "") for a in html5lib.parse(page).iter(f"{XHTML}a")]


@pytest.fixture(autouse=True)
def _publication():
    Publication.load()  # the first page view would create it, starting a new cache generation


@pytest.fixture
def stripe_webhooks(client, stripe_api, django_capture_on_commit_callbacks) -> StripeWebhooks:
    return StripeWebhooks(client, stripe_api, django_capture_on_commit_callbacks)


@pytest.fixture
def article():
    return PublishedArticleFactory(
        slug="the-straits",
        visibility=Article.Visibility.PAID,
        body='<p>Free opening.</p><hr class="paywall"><p>Paid analysis.</p>',
    )


@pytest.fixture
def plan(stripe_api):
    price = stripe_api.add_price(unit_amount=800, interval="month")
    return PlanFactory(name="Monthly", amount=800, stripe_price_id=price["id"])


def test_an_upgrade_after_clicking_the_emails_upgrade_button_is_credited_to_the_article(
    client, stripe_api, stripe_webhooks, article, plan
):
    rendered = render_article_email(article=article, segment=Delivery.Segment.FREE)
    [button] = [href for href in links_of(rendered.html) if "/upgrade/" in href]
    assert button == "http://testserver/upgrade/?ref=the-straits"

    page = client.get(button.removeprefix("http://testserver")).content.decode()
    [upgrade_form] = [form for form in forms_of(page) if form["action"] == "/upgrade/"]
    assert upgrade_form["ref"] == "the-straits"

    response = client.post(
        "/upgrade/", {**upgrade_form, "plan": plan.pk, "email": "reader@example.com"}
    )
    assert response.status_code == 303
    [request] = stripe_api.requests_to("POST", "/v1/checkout/sessions")
    assert request.params["subscription_data"]["metadata"]["source_article_id"] == str(article.pk)

    session = stripe_api.complete_checkout(response["Location"].rsplit("/", 1)[-1])
    subscription = stripe_api.get("subscription", session["subscription"])
    for event in (
        stripe_api.event("customer.subscription.created", subscription),
        stripe_api.event("checkout.session.completed", session),
    ):
        assert stripe_webhooks.send(event).status_code == 200

    membership = Membership.objects.get(stripe_subscription_id=subscription["id"])
    assert membership.status == Membership.Status.ACTIVE
    assert membership.source_article_id == article.pk
    # The new reader's signup came from the article too.
    assert Subscriber.objects.get(email="reader@example.com").source_article_id == article.pk
    figures = article_conversions(article=article)
    assert figures.upgrades == 1
    assert figures.paying_now == 1
    assert figures.mrr == {"usd": 800}
    assert article_conversions(article=PublishedArticleFactory()).upgrades == 0


def test_a_later_subscription_update_does_not_move_the_credit(
    client, stripe_api, stripe_webhooks, article, plan
):
    other = PublishedArticleFactory(slug="another-one")
    response = client.post(
        "/upgrade/", {"plan": plan.pk, "email": "reader@example.com", "ref": "the-straits"}
    )
    session = stripe_api.complete_checkout(response["Location"].rsplit("/", 1)[-1])
    stripe_webhooks.deliver("checkout.session.completed", session)
    # Someone edits the subscription's metadata in Stripe's dashboard afterwards.
    subscription = stripe_api.update_subscription(
        session["subscription"],
        metadata={**session["metadata"], "source_article_id": str(other.pk)},
    )
    stripe_webhooks.deliver("customer.subscription.updated", subscription)

    membership = Membership.objects.get()
    assert membership.source_article_id == article.pk


def test_a_signup_from_the_article_pages_form_is_credited_to_the_article(client, article):
    page = client.get(article.get_absolute_url()).content.decode()
    [signup] = [form for form in forms_of(page) if form["action"] == "/subscribe/"]
    assert signup["ref"] == "the-straits"

    response = client.post("/subscribe/", {**signup, "email": "new@example.com"})

    assert response.status_code == 200
    assert Subscriber.objects.get(email="new@example.com").source_article_id == article.pk


def test_the_article_pages_subscribe_upgrade_and_donate_links_name_the_article(
    client, article, plans_on_sale
):
    page = client.get(article.get_absolute_url()).content.decode()
    links = links_of(page)
    assert "/upgrade/?ref=the-straits" in links
    assert "/donate/?ref=the-straits" in links


def test_a_signup_from_a_shared_ref_link_is_credited_to_the_article(client, article):
    page = client.get("/subscribe/?ref=the-straits").content.decode()
    forms = [form for form in forms_of(page) if form["action"] == "/subscribe/"]
    # The page's own form carries the ref (the footer's form is the site-wide one).
    assert any(form.get("ref") == "the-straits" for form in forms)
    carried = next(form for form in forms if form.get("ref"))

    client.post("/subscribe/", {**carried, "email": "shared@example.com"})

    assert Subscriber.objects.get(email="shared@example.com").source_article_id == article.pk


def test_a_donation_from_a_ref_link_is_credited_and_dated_when_paid(
    client, stripe_api, stripe_webhooks, article
):
    page = client.get("/donate/?ref=the-straits").content.decode()
    [form] = [form for form in forms_of(page) if form["action"] == "/donate/"]
    response = client.post(
        "/donate/", {**form, "amount": "2500", "frequency": "once", "email": "fan@example.com"}
    )
    assert response.status_code == 303
    donation = Donation.objects.get()
    assert donation.source_article_id == article.pk
    assert donation.paid_at is None

    session = stripe_api.complete_checkout(response["Location"].rsplit("/", 1)[-1])
    stripe_webhooks.deliver("checkout.session.completed", session)

    donation.refresh_from_db()
    assert donation.status == Donation.Status.PAID
    assert donation.paid_at is not None
    figures = article_conversions(article=article)
    assert (figures.donations, figures.donated) == (1, {"usd": 2500})


@pytest.mark.parametrize(
    "ref",
    [
        "no-such-article",
        "the-straits" + "x" * 5000,
        "<script>alert(1)</script>",
        "1",
        "' OR 1=1 --",
        "\x00",
        "draft-one",
    ],
)
def test_a_ref_naming_no_published_article_is_ignored_never_an_error(client, article, ref):
    ArticleFactory(slug="draft-one", status=Article.Status.DRAFT)

    page = client.get("/subscribe/", {"ref": ref})
    assert page.status_code == 200
    assert all(not form.get("ref") for form in forms_of(page.content.decode()))
    response = client.post("/subscribe/", {"email": "who@example.com", "ref": ref})

    assert response.status_code == 200
    assert Subscriber.objects.get(email="who@example.com").source_article_id is None
    assert source_for_ref(ref) is None


def _signup(client, capture, email: str, ref: str = "") -> str:
    """Post the signup form; the path of the confirmation link it emailed, if any."""
    mail.outbox.clear()
    Subscriber.objects.filter(email=email).update(confirmation_sent_at=None)
    with capture(execute=True):
        client.post("/subscribe/", {"email": email, "ref": ref, "website": ""})
    if not mail.outbox:
        return ""
    match = re.search(r"http://testserver(/subscribe/confirm/[^/\s]+/)", mail.outbox[0].body)
    assert match, mail.outbox[0].body
    return match.group(1)


def test_a_new_address_is_credited_at_once_and_only_a_known_ones_link_carries_the_article(
    client, article, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    first = _signup(client, capture, "fresh@example.com", ref="the-straits")

    assert Subscriber.objects.get().source_article_id == article.pk
    assert read_confirmation_source(token=first.rstrip("/").rsplit("/", 1)[-1]) is None
    again = _signup(client, capture, "fresh@example.com", ref="the-straits")
    assert read_confirmation_source(token=again.rstrip("/").rsplit("/", 1)[-1]) == article.pk


def test_the_last_signup_naming_an_article_is_credited_when_its_link_is_followed(
    client, article, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    other = PublishedArticleFactory(slug="other-piece")
    _signup(client, capture, "twice@example.com", ref="the-straits")
    from_other = _signup(client, capture, "twice@example.com", ref="other-piece")
    _signup(client, capture, "twice@example.com")  # from the home page

    with capture(execute=True):
        client.get(from_other)

    subscriber = Subscriber.objects.get(email="twice@example.com")
    assert subscriber.status == Subscriber.Status.ACTIVE
    assert subscriber.source_article_id == other.pk


def test_posting_a_former_readers_address_with_a_ref_moves_no_credit_until_they_confirm(
    client, article, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    other = PublishedArticleFactory(slug="other-piece")
    with capture(execute=True):
        client.get(_signup(client, capture, "rita@example.com", ref="the-straits"))
    with capture(execute=True):
        client.post(
            f"/unsubscribe/{make_unsubscribe_token(subscriber_id=Subscriber.objects.get().pk)}/"
        )
    assert Subscriber.objects.get().status == Subscriber.Status.UNSUBSCRIBED
    before = (article_conversions(article=article), article_conversions(article=other))
    assert before[0].signups == 1

    # Anyone can post the address with another article's ref.
    link = _signup(client, capture, "rita@example.com", ref="other-piece")

    assert link  # the reader is asked to confirm
    assert (article_conversions(article=article), article_conversions(article=other)) == before
    assert Subscriber.objects.get().source_article_id == article.pk

    with capture(execute=True):
        client.get(link)  # the reader came back through that signup after all

    assert article_conversions(article=article).signups == 0
    assert article_conversions(article=other).signups == 1


def test_refs_on_shared_links_neither_split_nor_change_the_cached_article_page(client, article):
    first = client.get(article.get_absolute_url(), {"ref": "someone-elses-ref"})
    second = client.get(article.get_absolute_url(), {"ref": "yet-another-ref"})
    plain = client.get(article.get_absolute_url())

    assert first["X-Page-Cache"] == "miss"
    assert second["X-Page-Cache"] == "hit"
    assert plain["X-Page-Cache"] == "hit"
    assert first.content == second.content == plain.content
    page = first.content.decode()
    assert "someone-elses-ref" not in page
    # The only ref in the page is the article's own, the same for every reader.
    refs = {form["ref"] for form in forms_of(page) if "ref" in form}
    assert refs == {"the-straits"}


def test_signing_in_from_the_upgrade_page_comes_back_to_it_with_the_ref(
    client, article, plans_on_sale
):
    page = client.get("/upgrade/", {"ref": "the-straits"}).content.decode()
    [sign_in] = [href for href in links_of(page) if href.startswith("/accounts/login/?next=")]
    back = parse_qs(urlsplit(sign_in).query)["next"]
    assert back == ["/upgrade/?ref=the-straits"]

    # allauth's sign-in forms carry it on, and back on the page the ref is on the form.
    login_page = client.get(sign_in).content.decode()
    assert any(form.get("next") == back[0] for form in forms_of(login_page))
    client.force_login(UserFactory())
    upgrade_form = next(f for f in forms_of(client.get(back[0]).content.decode()) if "ref" in f)
    assert upgrade_form["ref"] == "the-straits"
