"""Link rewriting over generated URLs and bodies, round-tripped through real parsers.

Each generated body is rendered twice, without tracking and with it, and both readers'
messages are parsed with the email library and html5lib: every web link of the
untracked email must come back, in order and exactly, from the token of the tracked
email's link in its place, and the tracked email's fast SMTP path must still give the
email library's bytes (or step aside).
"""

from __future__ import annotations

import email
import email.policy
from html import escape
from typing import Any
from urllib.parse import urlsplit

import html5lib
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from newsletter.models import Article, Delivery
from newsletter.services import tracking
from newsletter.services.email_rendering import (
    Reader,
    personalise,
    personalised_bytes,
    render_article_email,
)
from tests.newsletter.test_email_wire import DATE, publication

pytestmark = pytest.mark.django_db

url_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="#"),
    max_size=40,
)
urls = st.one_of(
    st.builds(
        lambda scheme, host, path, query: f"{scheme}://{host}/{path}?{query}",
        st.sampled_from(["https", "http"]),
        st.sampled_from(["example.org", "bücher.example", "xn--bcher-kva.example", "a.b.c"]),
        url_text,
        url_text,
    ),
    st.sampled_from(
        [
            "https://example.org/a?b=c&d='e'&f=\"g\"",
            "https://example.org/=?=&==",
            "https://example.org/straße/日本語?q=ö",
            "https://example.org/" + "x" * 1500,
            "https://example.org/%20%22encoded%22?x=%3D",
        ]
    ),
)
# A browser strips these from both ends of an href; the link is tracked as what is left.
spaces = st.text(alphabet=" \t\n\r\x0c", max_size=3)
# The site's own account, sign-in and unsubscribe pages: never through the redirect.
OWN_PAGES = ("/account/", "/accounts/", "/unsubscribe/")
own_pages = st.builds(
    lambda path, rest: f"http://testserver{path}{rest}",
    st.sampled_from((*OWN_PAGES, "/Account")),
    st.sampled_from(["", "tracking/", "login/?next=/"]),
)
words = st.one_of(
    st.text(min_size=1, max_size=20).map(escape),
    st.sampled_from(["=", "=E2=82=AC", "&amp;", "中文" * 300, "x" * 1000]),
)


@st.composite
def bodies(draw: Any) -> tuple[str, list[str]]:
    links = draw(st.lists(st.one_of(urls, own_pages), min_size=1, max_size=5))
    parts = [
        f'<p>{draw(words)} <a href="{escape(draw(spaces) + url + draw(spaces), quote=True)}">'
        f"{draw(words)}</a> {draw(words)}</p>"
        for url in links
    ]
    return "".join(parts), links


def links_of(data: bytes) -> tuple[list[str], list[str]]:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert not message.defects
    html = message.get_body(preferencelist=("html",)).get_content()
    document = html5lib.parse(html, namespaceHTMLElements=False)
    hrefs = [a.get("href") or "" for a in document.iter("a")]
    images = [img.get("src") or "" for img in document.iter("img")]
    return hrefs, images


def message_bytes(rendered: Any, reader: Reader) -> bytes:
    mime: Any = personalise(rendered=rendered, reader=reader, send_id=3, date=DATE).message()
    if rendered.wire_template is not None:
        mime.set_boundary(rendered.wire_template.boundary)
    data: bytes = mime.as_bytes(linesep="\r\n")
    return data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(generated=bodies(), delivery_id=st.integers(1, 2**63 - 1))
@example(generated=('<p><a href="https://example.org/?a=&quot;b&quot;">x</a></p>',
                    ['https://example.org/?a="b"']), delivery_id=1)  # fmt: skip
# "İ" lowers to two characters: the pixel was once placed by an index into the lowered text.
@example(generated=('<p>0 <a href="https://example.org/?">İ</a> İ</p>',
                    ['https://example.org/?']), delivery_id=1)  # fmt: skip
def test_every_rewritten_link_decodes_to_the_link_it_replaced(generated, delivery_id):
    body, _ = generated
    article, _ = Article.objects.get_or_create(
        slug="links", defaults={"title": "Links", "visibility": Article.Visibility.PUBLIC}
    )
    article.body = body
    reader = Reader(
        subscriber_id=9, email="reader@example.com", name="Zoë", delivery_id=delivery_id
    )
    plain = render_article_email(
        article=article, segment=Delivery.Segment.PAID, publication=publication()
    )
    tracked = render_article_email(
        article=article, segment=Delivery.Segment.PAID, publication=publication(), tracked=True
    )

    plain_hrefs, plain_images = links_of(message_bytes(plain, reader))
    tracked_data = message_bytes(tracked, reader)
    tracked_hrefs, tracked_images = links_of(tracked_data)

    assert len(plain_hrefs) == len(tracked_hrefs)
    for original, rewritten in zip(plain_hrefs, tracked_hrefs, strict=True):
        address = original.strip("".join(map(chr, range(0x21))))
        if urlsplit(address).netloc == "testserver" and (
            urlsplit(address).path.rstrip("/").lower() + "/"
        ).startswith(OWN_PAGES):
            assert rewritten == original  # never through the redirect
        elif address.lower().startswith(("http://", "https://")):
            parts = urlsplit(rewritten)
            assert parts.path.startswith("/r/") and parts.path.endswith("/")
            target = tracking.click_target(parts.path[3:-1])
            assert target is not None
            assert target.url == address
            assert target.delivery_id == delivery_id
        else:
            assert rewritten == original  # mailto: and the like
    pixels = [src for src in tracked_images if urlsplit(src).path.startswith("/o/")]
    assert len(pixels) == 1 and len(tracked_images) == len(plain_images) + 1
    assert tracking.open_token_delivery(urlsplit(pixels[0]).path[3:]) == delivery_id

    prepared = personalised_bytes(rendered=tracked, reader=reader, send_id=3, date=DATE)
    if prepared is not None:
        assert prepared[0] == tracked_data


def test_a_tracked_email_keeps_the_fast_smtp_path_with_one_signature_per_reader():
    article = Article.objects.create(
        slug="fast", title="Fast", body='<p><a href="https://example.org/x">x</a></p>'
    )
    tracked = render_article_email(
        article=article, segment=Delivery.Segment.PAID, publication=publication(), tracked=True
    )
    assert tracked.wire_template is not None
    reader = Reader(subscriber_id=9, email="reader@example.com", name="Zoë", delivery_id=42)
    prepared = personalised_bytes(rendered=tracked, reader=reader, send_id=3, date=DATE)
    assert prepared is not None
    assert prepared[0] == message_bytes(tracked, reader)
    assert tracking.TRACKING_PLACEHOLDER.encode() not in prepared[0]
    assert prepared[0].count(tracking.delivery_token(42).encode()) >= 2  # pixel and link
