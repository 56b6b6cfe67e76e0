"""The reader's pages as a person and their tools meet them: accessible (axe-core), valid
(the Nu HTML checker), no sideways scrolling on a phone, sign-in with a way back from a
mistyped address, and nothing broken when Stripe is not configured."""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone
from playwright.sync_api import Page, expect

from newsletter.models import Article, Author
from publication.models import Publication
from tests.browser import harness
from tests.browser.checks import axe_violations, html_errors
from tests.browser.conftest import Site
from tests.browser.harness import message_text
from tests.factories import PlanFactory, SubscriberFactory

pytestmark = pytest.mark.browser

LONG_WORD = "Rechtsschutzversicherungsgesellschaften" * 8  # 312 letters, no break
PHONE = {"width": 390, "height": 844}


def publication() -> Publication:
    found, _ = Publication.objects.update_or_create(
        pk=1,
        defaults={
            "name": "The Meridian Letter",
            "sender_email": "letters@meridian.example.org",
            "tagline": "Independent analysis of geopolitics",
            "description": "Analysis of power, energy and trade.",
            "kofi_url": "https://ko-fi.com/meridianletter",
            "buymeacoffee_url": "https://www.buymeacoffee.com/meridianletter",
        },
    )
    return found


def paid_article(*, title: str = "Convoys and chokepoints", word: str = "") -> Article:
    article = Article.objects.create(
        title=title,
        slug="convoys-and-chokepoints",
        subtitle="What the strait tells us",
        body=f'<p>Shipping fell by a third. {word}</p><hr class="paywall"><p>Paid part.</p>',
        visibility=Article.Visibility.PAID,
        status=Article.Status.PUBLISHED,
        published_at=timezone.now(),
    )
    article.authors.set([Author.objects.create(slug="ines", display_name="Inês Duarte")])
    return article


def horizontal_overflow(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def check_pages(page: Page, base: str, paths: list[str]) -> dict[str, str]:
    """Visit each page; axe-core must find nothing. Returns the HTML the server sent."""
    sent = {}
    for path in paths:
        response = page.goto(f"{base}{path}")
        assert response is not None and response.status == 200, path
        assert axe_violations(page) == [], path
        sent[path] = response.text()
    return sent


def test_reader_pages_pass_axe_core_and_the_html_checker(site: Site, page: Page) -> None:
    publication()
    article = paid_article()
    price = site.stripe.add_price(unit_amount=800, interval="month")
    PlanFactory(name="Monthly", amount=800, stripe_price_id=price["id"])

    sent = check_pages(
        page,
        site.url,
        ["/", article.get_absolute_url(), "/subscribe/", "/donate/", "/upgrade/",
         "/accounts/signup/", "/accounts/login/"],
    )  # fmt: skip
    page.get_by_label("Email address").fill("reader@example.org")
    page.get_by_role("button", name="Email me a sign-in code").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Enter your sign-in code")
    assert axe_violations(page) == []
    sent["code entry"] = page.content()

    assert html_errors(sent) == []


def test_the_checks_catch_what_they_are_for(site: Site, page: Page) -> None:
    """The two checks fail on the faults the pages once had (no h1, an image link with no
    text, microseconds in a datetime), so their silence above means something."""
    page.set_content(
        '<!doctype html><html lang="en"><head><title>t</title></head><body><main>'
        '<a href="/p/x/"><img src="/x.jpg" alt=""></a>'
        '<time datetime="2026-12-01T12:00:00.123456+00:00">1 December</time></main></body></html>'
    )
    found = " ".join(axe_violations(page))
    assert "link-name" in found and "page-has-heading-one" in found
    [error] = html_errors({"faulty": page.content()})
    assert "datetime" in error


def test_a_phone_reader_never_scrolls_sideways_past_a_long_word(site: Site, page: Page) -> None:
    publication()
    article = paid_article(title=f"On {LONG_WORD[:290]}", word=LONG_WORD[:300])
    page.set_viewport_size(PHONE)

    for path in ["/", article.get_absolute_url()]:
        page.goto(site.link(path))
        expect(page.get_by_role("heading", name=article.title)).to_be_visible()
        assert horizontal_overflow(page) <= 0, path

    # A 312-character address is refused, and the answer that repeats it fits the phone.
    page.goto(site.link("/subscribe/"))
    page.locator("main").get_by_label("Email address").fill(f"{LONG_WORD}@example.org")
    page.locator("main").get_by_role("button", name="Subscribe").click()
    expect(page.locator(".errors")).to_contain_text("we can send to")
    assert horizontal_overflow(page) <= 0


def emailed_code(site: Site, to: str) -> tuple[str, email.message.EmailMessage]:
    message = site.mail.wait_for(to=to, subject_contains="sign-in code")
    # Read back through the standard library's parser, as a mail client would.
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    code = re.search(r"^\s*([A-Z0-9][A-Z0-9-]{4,14}[A-Z0-9])\s*$", message_text(parsed), re.M)
    assert code, message_text(parsed)
    return code.group(1), parsed


def test_a_mistyped_address_at_sign_in_has_a_way_back(site: Site, page: Page) -> None:
    publication()
    SubscriberFactory(email="ada@example.org")

    page.goto(site.link("/accounts/login/"))
    page.get_by_label("Email address").fill("ada@exmaple.org")
    page.get_by_role("button", name="Email me a sign-in code").click()
    expect(page.locator("main")).to_contain_text("We emailed a code to ada@exmaple.org")
    # Sign in, from the header, still leads to the code for the wrong address ...
    page.get_by_role("link", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Enter your sign-in code")
    # ... and the page itself offers the way back.
    page.get_by_role("button", name="Use another address").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.get_by_label("Email address").fill("Ada@Example.org")
    page.get_by_role("button", name="Email me a sign-in code").click()

    code, message = emailed_code(site, "ada@example.org")
    assert "The Meridian Letter" in str(message["Subject"])
    assert message["From"].addresses[0].display_name == "The Meridian Letter"
    body = message_text(message) + str(message.get_body(("html",)).get_content())
    assert "The Meridian Letter" in body
    assert "127.0.0.1" not in body.replace(site.url, "") and "example.com" not in body
    page.get_by_label("Code").fill(code)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your account")
    # A signed-in reader manages email from the account page, not the footer's form.
    expect(page.locator(".footer-subscribe")).to_have_count(0)


def test_three_wrong_codes_lead_back_to_the_sites_sign_in_page(site: Site, page: Page) -> None:
    publication()
    SubscriberFactory(email="ada@example.org")
    page.goto(site.link("/accounts/login/"))
    page.get_by_label("Email address").fill("ada@example.org")
    page.get_by_role("button", name="Email me a sign-in code").click()
    for attempt in range(3):
        page.get_by_label("Code").fill(f"WRONG{attempt}")
        page.get_by_role("button", name="Sign in", exact=True).click()

    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page.locator(".messages")).to_contain_text("that code no longer works")
    assert page.title() == "Sign in · The Meridian Letter"
    assert axe_violations(page) == []


@pytest.fixture(scope="module")
def stripe_off(e2e_stack: Site, django_db_blocker, tmp_path_factory) -> Iterator[str]:
    """The same site and database served by a second gunicorn without Stripe's keys, as
    a fresh install runs; its page cache is its own."""
    with django_db_blocker.unblock():
        database_name = connection.settings_dict["NAME"]
    prefix = f"{harness.KEY_PREFIX}-stripe-off"
    off = {"STRIPE_SECRET_KEY": "", "STRIPE_WEBHOOK_SECRET": "", "STRIPE_PUBLISHABLE_KEY": ""}
    workdir = Path(tmp_path_factory.mktemp("stripe-off"))
    # Static files collected before gunicorn starts: with one worker and no Celery worker
    # to wait for, its first page could otherwise come before the manifest.
    harness.collect_static({**e2e_stack.stack.env, "STATIC_ROOT": str(workdir / "static")})
    with harness.running_stack(
        database_name=database_name,
        workdir=workdir,
        with_worker=False,
        web_workers=1,
        static_collected=True,
        extra_env={
            **off,
            "CACHE_KEY_PREFIX": prefix,
            "CELERY_BROKER_KEY_PREFIX": f"{prefix}:",
        },
    ) as stack:
        yield stack.site_url
    harness.delete_keys(f"{prefix}*")


def test_without_stripe_donate_offers_ko_fi_and_no_page_offers_a_dead_upgrade(
    site: Site, stripe_off: str, page: Page
) -> None:
    publication()
    article = paid_article()
    PlanFactory(name="Monthly", amount=800, stripe_price_id=None)

    response = page.goto(f"{stripe_off}/donate/")
    assert response is not None and response.status == 200
    expect(page.get_by_role("link", name="Support us on Ko-fi")).to_have_attribute(
        "href", "https://ko-fi.com/meridianletter"
    )
    expect(page.get_by_role("link", name="Buy us a coffee")).to_be_visible()
    expect(page.get_by_role("button", name="Continue to payment")).to_have_count(0)
    sent = {"/donate/": response.text()}

    page.goto(f"{stripe_off}{article.get_absolute_url()}")
    expect(page.locator("#paywall")).to_contain_text("Paid subscriptions are not open yet")
    assert page.locator('a[href^="/upgrade/"]').count() == 0

    # The upgrade page lists the plans and says why they cannot be bought yet.
    response = page.goto(f"{stripe_off}/upgrade/")
    assert response is not None
    expect(page.locator(".plans")).to_contain_text("Monthly")
    expect(page.locator("main")).to_contain_text("Payments are not set up on this site yet")
    sent["/upgrade/"] = response.text()
    assert axe_violations(page) == []
    assert html_errors(sent) == []
