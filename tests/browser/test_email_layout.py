"""The emails as a mail client's web view renders them: 600 and 375 px, light and dark.

Chromium stands in for the WebKit/Blink views of Apple Mail, iOS and Android clients:
nothing may be wider than the screen (a pasted link, a 1,600 px image), and the
dark-mode rules must take effect.
"""

from __future__ import annotations

import io

import pytest
from django.template.loader import render_to_string
from PIL import Image
from playwright.sync_api import Browser, Route

from newsletter.models import Article, Delivery
from newsletter.services.email_rendering import Reader, personalise, render_article_email
from publication.emails import email_context, transactional_message
from publication.models import Publication

# No database: the ORM would open a connection of its own under Playwright's event loop.
pytestmark = [pytest.mark.browser]

LONG_URL = (
    "https://example.com/subscribe/confirm/eyJzIjo0MiwiZSI6ImFkYSJ9:1tXyZa:" + "Q" * 120 + "/"
)


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 130)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def publication() -> Publication:
    return Publication(
        name="The Meridian Letter, Lisbon",
        tagline="Dispatches from the Atlantic edge",
        sender_email="letters@meridian.example",
    )


def article_html(publication: Publication) -> str:
    article = Article(
        title="The second book of the harbour",
        slug="the-second-book",
        body=(
            "<p>Opening.</p><figure><img src='/media/uploads/chart.png' alt='Tonnage'>"
            f"<figcaption>Tonnage, 1990 to 2025.</figcaption></figure><p>{LONG_URL}</p>"
        ),
        cover_caption="Cranes at dawn",
    )
    article.cover_image.name = "covers/cranes.png"
    rendered = render_article_email(
        article=article, segment=Delivery.Segment.PAID, publication=publication
    )
    message = personalise(
        rendered=rendered, reader=Reader(subscriber_id=1, email="a@example.com"), send_id=1
    )
    return str(message.alternatives[0][0])


def confirmation_html(publication: Publication) -> str:
    context = email_context(publication, subject="Confirm", confirm_url=LONG_URL, expires_in_days=3)
    message = transactional_message(
        to="a@example.com",
        subject="Confirm your subscription",
        text=render_to_string("email/confirm.txt", context),
        html=render_to_string("email/confirm.html", context),
        publication=publication,
    )
    return str(message.alternatives[0][0])


def render(browser: Browser, html: str, *, width: int, dark: bool = False) -> dict:
    context = browser.new_context(
        viewport={"width": width, "height": 800}, color_scheme="dark" if dark else "light"
    )
    page = context.new_page()
    image = _png(1600, 900)

    def serve(route: Route) -> None:
        if route.request.resource_type == "image":
            route.fulfill(status=200, content_type="image/png", body=image)
        else:
            route.abort()

    page.route("http://testserver/**", serve)
    page.set_content(html, wait_until="load")
    result = page.evaluate(
        """() => ({
        scrollWidth: document.documentElement.scrollWidth,
        images: [...document.images].map(i => i.getBoundingClientRect().width),
        card: getComputedStyle(document.querySelector('.card') || document.body).backgroundColor,
        text: getComputedStyle(document.querySelector('h1 a') || document.body).color,
        })"""
    )
    context.close()
    return result


@pytest.mark.parametrize("width", [600, 375])
@pytest.mark.parametrize("kind", ["article", "confirmation"])
def test_nothing_is_wider_than_the_screen(browser, publication, kind, width):
    html = article_html(publication) if kind == "article" else confirmation_html(publication)

    result = render(browser, html, width=width)

    assert result["scrollWidth"] <= width
    assert all(0 < w <= min(width, 600) for w in result["images"]), result["images"]


def test_dark_mode_darkens_the_card_and_lightens_the_text(browser, publication):
    html = article_html(publication)

    light, dark = render(browser, html, width=600), render(browser, html, width=600, dark=True)

    assert light["card"] == "rgb(255, 255, 255)"
    assert dark["card"] == "rgb(34, 32, 29)"
    assert dark["text"] == "rgb(236, 235, 231)"
