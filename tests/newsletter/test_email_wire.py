"""The prepared fast path gives exactly the bytes the email library gives, or steps aside.

`personalised_bytes` (the workers' SMTP path) must produce byte for byte what
`personalise(...).message()` produces for the same reader, boundary and Date, or
return None so that reader's message is built by the library. Generated names,
addresses, publication names and article bodies probe every way the two could part.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from html import escape
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from config.mail import envelope_address
from newsletter.models import Article, Delivery
from newsletter.services.email_rendering import (
    Reader,
    RenderedArticleEmail,
    personalise,
    personalised_bytes,
    render_article_email,
)
from publication.models import Publication
from subscriptions.services.tokens import unsubscribe_url

DATE = "Tue, 01 Dec 2026 10:00:00 +0000"
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def publication(name: str = "The Meridian Letter, Lisbon") -> Publication:
    return Publication(
        name=name,
        tagline="Dispatches from the Atlantic edge",
        sender_name=name,
        sender_email="letters@meridian.example",
        reply_to_email="editor@meridian.example",
        footer_text="Rua do Alecrim 1, Lisboa",
    )


def rendered_for(body: str, *, name: str = "The Meridian Letter, Lisbon") -> RenderedArticleEmail:
    article = Article(
        title="The tide tables",
        slug="the-tide-tables",
        subtitle="What the harbour knows",
        body=body,
        visibility=Article.Visibility.PUBLIC,
    )
    return render_article_email(
        article=article, segment=Delivery.Segment.PAID, publication=publication(name)
    )


def library_bytes(rendered: RenderedArticleEmail, reader: Reader, *, send_id: int = 5) -> bytes:
    """The reader's message as the email library writes it, with the template's boundary."""
    mime: Any = personalise(rendered=rendered, reader=reader, send_id=send_id, date=DATE).message()
    if rendered.wire_template is not None:
        mime.set_boundary(rendered.wire_template.boundary)
    data: bytes = mime.as_bytes(linesep="\r\n")
    return data


def fast_bytes(rendered: RenderedArticleEmail, reader: Reader, *, send_id: int = 5) -> bytes | None:
    prepared = personalised_bytes(rendered=rendered, reader=reader, send_id=send_id, date=DATE)
    return None if prepared is None else prepared[0]


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def contents(message: EmailMessage) -> tuple[str, str]:
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def assert_well_formed(data: bytes, *, reader: Reader, rendered: RenderedArticleEmail) -> None:
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    message = parse(data)
    assert not message.defects
    to = [a.addr_spec.casefold() for a in message["To"].addresses]
    assert to == [envelope_address(reader.email).casefold()]
    (sender,) = message["From"].addresses
    assert sender.addr_spec == "letters@meridian.example"
    assert sender.display_name == "The Meridian Letter, Lisbon"
    text, html = contents(message)
    if reader.name and not any(c in reader.name for c in LINE_BREAKS):
        assert f"Hi {reader.name}," in text
        assert f"Hi {escape(reader.name)}," in html
    assert reader.email in text


names = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "Zoë =E2=82=AC Li", "'" * 200, 'O\'Brien "Bo" =3D', "علي", "李小龍"]),
)
addresses = st.one_of(
    st.emails(),
    # Local parts are ASCII (Django's EmailValidator); domains may be IDNs.
    st.sampled_from(["a@bücher.example", f"{'x' * 70}@example.com", "o'neil+news@example.com"]),
)
words = st.one_of(
    st.text(min_size=1, max_size=30).map(escape),
    st.sampled_from(["=", "==", "=E2=82=AC", "&amp;", "\u202eRTL\u202c", "🙂🙃", "a=b"]),
    # Long runs without a space: Chinese text, an unbroken word (built, not drawn
    # character by character, which would be slow).
    st.tuples(st.text(alphabet="中文字符日本語", min_size=1, max_size=5), st.integers(60, 400)).map(
        lambda run: run[0] * run[1]
    ),
    st.integers(900, 1200).map(lambda n: "x" * n),
)
bodies = st.lists(st.lists(words, min_size=1, max_size=6), min_size=1, max_size=4).map(
    lambda paragraphs: "".join(f"<p>{' '.join(p)}</p>" for p in paragraphs)
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, name=names, address=addresses, subscriber_id=st.integers(1, 10**9))
@example(body="<p>" + "中文" * 800 + "</p>", name="Zoë =E2=82=AC Li", address="z@example.com",
         subscriber_id=7)  # fmt: skip
def test_the_fast_path_gives_the_librarys_bytes_or_none(body, name, address, subscriber_id):
    rendered = rendered_for(body)
    reader = Reader(subscriber_id=subscriber_id, email=address, name=name)

    reference = library_bytes(rendered, reader)
    fast = fast_bytes(rendered, reader)

    event("fast path" if fast is not None else "built by the library")
    if fast is not None:
        assert fast == reference
    assert_well_formed(reference, reader=reader, rendered=rendered)


@settings(max_examples=40, deadline=None)
@given(name=st.text(min_size=1, max_size=60).filter(lambda n: n.strip() and n.isprintable()))
def test_any_publication_name_gives_one_sender_and_a_well_formed_list_id(name):
    rendered = rendered_for("<p>Hello.</p>", name=name)
    reader = Reader(subscriber_id=3, email="reader@example.com", name="Ada")

    message = parse(library_bytes(rendered, reader))
    fast = fast_bytes(rendered, reader)

    (sender,) = message["From"].addresses
    assert sender.addr_spec == "letters@meridian.example"
    assert sender.display_name == name.strip()
    assert message["List-Id"].endswith(".meridian.example>")
    assert message["Message-ID"].endswith("@meridian.example>")
    assert fast is None or fast == library_bytes(rendered, reader)


def test_ordinary_readers_stay_on_the_fast_path_even_for_text_without_spaces():
    body = "<p>" + "中文没有空格" * 400 + "</p><p>Plain words = fine.</p>"
    rendered = rendered_for(body)
    assert rendered.wire_template is not None  # no part needs quoted-printable

    for reader in (
        Reader(subscriber_id=1, email="ada@example.com", name="Ada Lovelace"),
        Reader(subscriber_id=2, email="zoe@example.com", name="Zoë =E2=82=AC Li"),
        Reader(subscriber_id=3, email="li@example.com", name="李小龍"),
        Reader(subscriber_id=4, email="no-name@example.com"),
    ):
        fast = fast_bytes(rendered, reader)
        assert fast == library_bytes(rendered, reader)
        text, _ = contents(parse(fast))
        assert (f"Hi {reader.name}," in text) == bool(reader.name)


def test_a_name_that_would_make_an_over_long_line_is_built_by_the_library():
    rendered = rendered_for("<p>Short.</p>")
    reader = Reader(subscriber_id=9, email="quotes@example.com", name="'" * 200)

    assert fast_bytes(rendered, reader) is None
    data = library_bytes(rendered, reader)
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    text, html = contents(parse(data))
    assert "Hi " + "&#x27;" * 200 + "," in html
    assert "Hi " + "'" * 200 + "," in text


@pytest.mark.parametrize(
    "header", ["Date", "Message-ID", "List-Unsubscribe", "Feedback-ID", "List-Id", "To"]
)
def test_every_reader_header_is_filled_in_whole(header):
    rendered = rendered_for("<p>Hello.</p>")
    reader = Reader(subscriber_id=12345, email="reader@example.com", name="Ada")

    fast = parse(fast_bytes(rendered, reader) or b"")

    assert "placeholder" not in str(fast[header])
    assert str(fast[header]) == str(parse(library_bytes(rendered, reader))[header])


@settings(max_examples=30, deadline=None)
@given(subscriber_id=st.integers(1, 10**12))
def test_the_one_click_url_is_the_one_the_site_reverses(subscriber_id):
    rendered = rendered_for("<p>Hello.</p>")
    reader = Reader(subscriber_id=subscriber_id, email="reader@example.com")

    message = parse(fast_bytes(rendered, reader) or b"")

    assert (
        str(message["List-Unsubscribe"])
        .strip()
        .startswith(f"<{unsubscribe_url(subscriber_id=subscriber_id)}>, <mailto:")
    )
