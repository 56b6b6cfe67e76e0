"""The article email: rendered once per segment, then personalised per reader cheaply.

Rendering (templates, CSS inlining, the plain-text conversion) costs milliseconds, so
it happens once per segment (free, paid). What differs per reader (greeting, address,
unsubscribe link, headers) is put in by plain string replacement of placeholders.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from dataclasses import dataclass
from email.utils import formatdate, parseaddr
from html import escape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import css_inline
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.utils.text import slugify

from newsletter.models import Article, Delivery, Publication
from newsletter.services.content import free_body, full_body
from subscriptions.services.notifications import sender_address
from subscriptions.services.tokens import make_unsubscribe_token, unsubscribe_url

# Placeholders survive templates (no characters to escape) and the CSS inliner.
UNSUBSCRIBE_PLACEHOLDER = "@@broadside-unsubscribe-url@@"
GREETING_PLACEHOLDER = "@@broadside-greeting@@"
EMAIL_PLACEHOLDER = "@@broadside-email@@"
# Header placeholders of the prepared wire message (see `prepare_wire_template`).
_TO_PLACEHOLDER = "broadside-to@placeholder.invalid"
_MESSAGE_ID_PLACEHOLDER = "<broadside-message-id@placeholder.invalid>"
_DATE_PLACEHOLDER = "broadside-date-placeholder"
_MAILTO_TOKEN_PLACEHOLDER = "broadside-mailto-token"  # noqa: S105 (not a secret)
# Lines up to this length go out as 8bit text, so the placeholders stay intact.
_MAX_LINE = 900

# One pass over the message per reader: a reader's own values (a name may contain
# anything) are never searched for placeholders.
_READER_PLACEHOLDERS = re.compile(
    "|".join(map(re.escape, (UNSUBSCRIBE_PLACEHOLDER, GREETING_PLACEHOLDER, EMAIL_PLACEHOLDER)))
)
_WIRE_PLACEHOLDERS = re.compile(
    b"(%s)"
    % b"|".join(
        re.escape(placeholder.encode())
        for placeholder in (
            UNSUBSCRIBE_PLACEHOLDER,
            GREETING_PLACEHOLDER,
            EMAIL_PLACEHOLDER,
            _TO_PLACEHOLDER,
            _MESSAGE_ID_PLACEHOLDER,
            _DATE_PLACEHOLDER,
            _MAILTO_TOKEN_PLACEHOLDER,
        )
    )
)

_inliner = css_inline.CSSInliner(
    keep_style_tags=False, keep_at_rules=True, load_remote_stylesheets=False
)
_RELATIVE_URL_RE = re.compile(r"""(\b(?:src|href)=["'])/(?!/)""", re.IGNORECASE)


@dataclass(frozen=True)
class RenderedArticleEmail:
    """One segment's email, ready to personalise."""

    subject: str
    html: str
    text: str
    from_email: str
    reply_to: tuple[str, ...]
    list_id: str
    domain: str
    mailto: str
    # The prepared MIME message: (headers and text part, html part), each split into
    # literal bytes with a placeholder between every two.
    wire_template: tuple[list[bytes], list[bytes]] | None = None


@dataclass(frozen=True)
class Reader:
    """What personalisation needs of a subscriber."""

    subscriber_id: int | None
    email: str
    name: str = ""


def absolutise_urls(html: str) -> str:
    """Site-relative src/href values become absolute on SITE_URL (mail has no base URL)."""
    return _RELATIVE_URL_RE.sub(lambda m: f"{m.group(1)}{settings.SITE_URL}/", html)


def _absolute(url: str) -> str:
    """A media URL as mail needs it: absolute on SITE_URL unless storage made it so."""
    return url if url.startswith(("http://", "https://")) else f"{settings.SITE_URL}{url}"


def article_url(article: Article) -> str:
    return f"{settings.SITE_URL}/p/{article.slug}/"


def email_body_parts(*, article: Article, segment: str) -> tuple[str, bool]:
    """The body HTML this segment receives, and whether it stops at the paywall.

    Everyone on the list is a subscriber, so only paid articles are cut, and only for
    free readers (a paid article without a marker has no free part at all).
    """
    if article.visibility != Article.Visibility.PAID or segment == Delivery.Segment.PAID:
        return full_body(article=article), False
    return free_body(article=article), True


def _sender_domain(from_email: str) -> str:
    address = parseaddr(from_email)[1]
    return address.rpartition("@")[2] or "localhost"


def _list_id(publication: Publication, domain: str) -> str:
    label = slugify(publication.name) or "newsletter"
    name = publication.name.replace('"', "").strip()
    # A non-ASCII phrase would force RFC 2047 encoding of the whole header, <id> included.
    if name and name.isascii():
        return f'"{name}" <{label}.{domain}>'
    return f"<{label}.{domain}>"


def render_article_email(
    *, article: Article, segment: str, publication: Publication | None = None
) -> RenderedArticleEmail:
    """Render the article email for one segment (free or paid readers)."""
    publication = publication or Publication.load()
    body, cut_at_paywall = email_body_parts(article=article, segment=segment)
    body = absolutise_urls(body)
    cover_url = ""
    if article.cover_image:
        cover_url = _absolute(article.cover_image.url)
    logo_url = ""
    if publication.logo:
        logo_url = _absolute(publication.logo.url)
    authors = list(article.authors.all()) if article.pk else []
    context = {
        "publication": publication,
        "article": article,
        "subject": article.email_subject or article.title,
        "article_url": article_url(article),
        "body_html": body,
        "body_text": html_to_text(body),
        "cover_url": cover_url,
        "logo_url": logo_url,
        "authors": authors,
        "byline": ", ".join(a.display_name for a in authors),
        "cut_at_paywall": cut_at_paywall,
        "upgrade_url": f"{settings.SITE_URL}/upgrade/",
        "donate_url": f"{settings.SITE_URL}/donate/",
        "account_url": f"{settings.SITE_URL}/account/",
        "site_url": settings.SITE_URL,
        "unsubscribe_url": UNSUBSCRIBE_PLACEHOLDER,
        "greeting": GREETING_PLACEHOLDER,
        "reader_email": EMAIL_PLACEHOLDER,
    }
    html = _inliner.inline(render_to_string("email/newsletter/article.html", context))
    html = wrap_html_lines(html)
    text = render_to_string("email/newsletter/article.txt", context)
    from_email = sender_address(publication)
    domain = _sender_domain(from_email)
    mailto = settings.EMAIL_UNSUBSCRIBE_MAILTO or publication.reply_to_email
    mailto = mailto or parseaddr(from_email)[1]
    rendered = RenderedArticleEmail(
        subject=context["subject"],
        html=html,
        text=text,
        from_email=from_email,
        reply_to=(publication.reply_to_email,) if publication.reply_to_email else (),
        list_id=_list_id(publication, domain),
        domain=domain,
        mailto=mailto,
    )
    return RenderedArticleEmail(
        **{**rendered.__dict__, "wire_template": prepare_wire_template(rendered)}
    )


def message_id(*, send_id: int, subscriber_id: int | None, domain: str) -> str:
    """Stable per (send, subscriber): a resent copy is recognisable as the same message."""
    digest = hashlib.sha256(
        f"{settings.SECRET_KEY}:{send_id}:{subscriber_id}".encode()
    ).hexdigest()[:16]
    return f"<broadside.{send_id}.{subscriber_id}.{digest}@{domain}>"


@dataclass(frozen=True)
class _ReaderValues:
    token: str
    one_click: str
    greeting_html: str
    greeting_text: str
    headers: dict[str, str]


def _reader_values(
    *, rendered: RenderedArticleEmail, reader: Reader, send_id: int
) -> _ReaderValues:
    if reader.subscriber_id is not None:
        token = make_unsubscribe_token(subscriber_id=reader.subscriber_id)
        one_click = unsubscribe_url(subscriber_id=reader.subscriber_id)
    else:  # a test email to an editor who is not a subscriber
        token = "test"  # noqa: S105 (not a secret: the mailto subject of a test email)
        one_click = f"{settings.SITE_URL}/account/"
    mailto = f"mailto:{rendered.mailto}?subject={quote('unsubscribe ' + token)}"
    headers = {
        "Message-ID": message_id(
            send_id=send_id, subscriber_id=reader.subscriber_id, domain=rendered.domain
        ),
        # RFC 2369 and RFC 8058 (one-click): mailbox providers show an unsubscribe button.
        "List-Unsubscribe": f"<{one_click}>, <{mailto}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": rendered.list_id,  # RFC 2919
    }
    return _ReaderValues(
        token=token,
        one_click=one_click,
        greeting_html=f"<p>Hi {escape(reader.name)},</p>" if reader.name else "",
        greeting_text=f"Hi {reader.name},\n" if reader.name else "",
        headers=headers,
    )


def personalise(
    *,
    rendered: RenderedArticleEmail,
    reader: Reader,
    send_id: int,
    subject_prefix: str = "",
) -> EmailMultiAlternatives:
    """One reader's message: their greeting, address and unsubscribe link and headers.

    For backends other than SMTP (an anymail ESP reads the fields, not MIME bytes), and
    for readers `personalised_bytes` cannot serve.
    """
    values = _reader_values(rendered=rendered, reader=reader, send_id=send_id)
    html_values = {
        UNSUBSCRIBE_PLACEHOLDER: escape(values.one_click),
        GREETING_PLACEHOLDER: values.greeting_html,
        EMAIL_PLACEHOLDER: escape(reader.email),
    }
    text_values = {
        UNSUBSCRIBE_PLACEHOLDER: values.one_click,
        GREETING_PLACEHOLDER: values.greeting_text,
        EMAIL_PLACEHOLDER: reader.email,
    }
    html = _READER_PLACEHOLDERS.sub(lambda m: html_values[m.group()], rendered.html)
    text = _READER_PLACEHOLDERS.sub(lambda m: text_values[m.group()], rendered.text)
    message = EmailMultiAlternatives(
        subject=subject_prefix + rendered.subject,
        body=text,
        from_email=rendered.from_email,
        to=[reader.email],
        reply_to=list(rendered.reply_to) or None,
        headers=values.headers,
    )
    message.attach_alternative(html, "text/html")
    return message


def personalised_bytes(
    *, rendered: RenderedArticleEmail, reader: Reader, send_id: int
) -> tuple[bytes, str] | None:
    """(MIME bytes, Message-ID) for one reader, straight from the prepared template.

    The fast path for SMTP: no message object at all. None when this reader's message
    must be built field by field (no template, or an address that needs encoding).
    """
    if rendered.wire_template is None:
        return None
    values = _reader_values(rendered=rendered, reader=reader, send_id=send_id)
    data = _personalised_wire(rendered.wire_template, reader=reader, values=values)
    if data is None:
        return None
    return data, values.headers["Message-ID"]


def envelope_sender(rendered: RenderedArticleEmail) -> str:
    """The bare address for MAIL FROM."""
    return parseaddr(rendered.from_email)[1]


def prepare_wire_template(
    rendered: RenderedArticleEmail,
) -> tuple[list[bytes], list[bytes]] | None:
    """The segment's complete MIME message with placeholders where each reader differs.

    None when the bodies could not go out as 8bit text (then a placeholder might be
    encoded beyond recognition) and every message is built the slow way.
    """
    mailto = f"mailto:{rendered.mailto}?subject={quote('unsubscribe ')}{_MAILTO_TOKEN_PLACEHOLDER}"
    message = EmailMultiAlternatives(
        subject=rendered.subject,
        body=rendered.text,
        from_email=rendered.from_email,
        to=[_TO_PLACEHOLDER],
        reply_to=list(rendered.reply_to) or None,
        headers={
            "Date": _DATE_PLACEHOLDER,
            "Message-ID": _MESSAGE_ID_PLACEHOLDER,
            "List-Unsubscribe": f"<{UNSUBSCRIBE_PLACEHOLDER}>, <{mailto}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": rendered.list_id,
        },
    )
    message.attach_alternative(rendered.html, "text/html")
    mime: Any = message.message()  # Django's SafeMIMEMultipart: as_bytes takes linesep
    data = mime.as_bytes(linesep="\r\n")
    boundary = b"\r\n--" + str(mime.get_boundary()).encode() + b"\r\n"
    html_start = data.find(boundary, data.find(boundary) + 1)
    expected = {
        UNSUBSCRIBE_PLACEHOLDER: rendered.html.count(UNSUBSCRIBE_PLACEHOLDER)
        + rendered.text.count(UNSUBSCRIBE_PLACEHOLDER)
        + 1,
        GREETING_PLACEHOLDER: rendered.html.count(GREETING_PLACEHOLDER)
        + rendered.text.count(GREETING_PLACEHOLDER),
        EMAIL_PLACEHOLDER: rendered.html.count(EMAIL_PLACEHOLDER)
        + rendered.text.count(EMAIL_PLACEHOLDER),
        _TO_PLACEHOLDER: 1,
        _MESSAGE_ID_PLACEHOLDER: 1,
        _DATE_PLACEHOLDER: 1,
        _MAILTO_TOKEN_PLACEHOLDER: 1,
    }
    if html_start < 0 or any(data.count(p.encode()) != n for p, n in expected.items()):
        return None
    # An all-ASCII part is labelled 7bit, but a reader's name or address may put UTF-8
    # into it; 8bit is the right label for both (RFC 2045 section 2.8).
    data = data.replace(
        b"\r\nContent-Transfer-Encoding: 7bit\r\n", b"\r\nContent-Transfer-Encoding: 8bit\r\n"
    )
    html_start = data.find(boundary, data.find(boundary) + 1)
    return _WIRE_PLACEHOLDERS.split(data[:html_start]), _WIRE_PLACEHOLDERS.split(data[html_start:])


def _personalised_wire(
    template: tuple[list[bytes], list[bytes]], *, reader: Reader, values: _ReaderValues
) -> bytes | None:
    if not reader.email.isascii():
        return None  # the To header needs encoding: build this one the slow way
    # The headers and the text part come before the html part, whose values are escaped.
    text_part, html_part = template
    text_values = {
        GREETING_PLACEHOLDER.encode(): _wire_bytes(values.greeting_text),
        EMAIL_PLACEHOLDER.encode(): _wire_bytes(reader.email),
        UNSUBSCRIBE_PLACEHOLDER.encode(): _wire_bytes(values.one_click),
        _TO_PLACEHOLDER.encode(): reader.email.encode(),
        _MESSAGE_ID_PLACEHOLDER.encode(): values.headers["Message-ID"].encode(),
        _DATE_PLACEHOLDER.encode(): _date().encode(),
        _MAILTO_TOKEN_PLACEHOLDER.encode(): quote(values.token).encode(),
    }
    html_values = {
        GREETING_PLACEHOLDER.encode(): _wire_bytes(values.greeting_html),
        EMAIL_PLACEHOLDER.encode(): _wire_bytes(escape(reader.email)),
        UNSUBSCRIBE_PLACEHOLDER.encode(): _wire_bytes(escape(values.one_click)),
    }
    return _fill(text_part, text_values) + _fill(html_part, html_values)


def _fill(pieces: list[bytes], values: dict[bytes, bytes]) -> bytes:
    """Join the literal pieces with each placeholder's value (they alternate)."""
    filled = pieces.copy()
    filled[1::2] = [values[placeholder] for placeholder in pieces[1::2]]
    return b"".join(filled)


def _wire_bytes(value: str) -> bytes:
    """A value as it must appear in the message: UTF-8, with CRLF line endings."""
    return value.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n").encode()


def _date() -> str:
    return formatdate(localtime=settings.EMAIL_USE_LOCALTIME)


def wrap_html_lines(html: str, width: int = _MAX_LINE) -> str:
    """Break over-long lines at whitespace that does not change the rendering.

    Mail lines may not exceed 998 octets (RFC 5322). A newline may replace a space in
    text (browsers collapse whitespace) or between attributes inside a tag, never in a
    quoted attribute value or inside <pre>.
    """
    if all(len(line) <= width for line in html.splitlines()):
        return html
    out: list[str] = []
    in_tag = False
    quote_char = ""
    in_pre = False
    line_length = 0
    last_break = -1  # index in `out` of the last breakable space on this line
    for index, char in enumerate(html):
        if char == "\n":
            line_length = 0
            last_break = -1
            out.append(char)
            continue
        if in_tag:
            if quote_char:
                if char == quote_char:
                    quote_char = ""
            elif char in "\"'":
                quote_char = char
            elif char == ">":
                in_tag = False
        elif char == "<":
            in_tag = True
            lowered = html[index : index + 5].lower()
            if lowered.startswith("<pre"):
                in_pre = True
            elif lowered.startswith("</pre"):
                in_pre = False
        breakable = char == " " and not quote_char and not in_pre
        out.append(char)
        line_length += 1
        if breakable:
            last_break = len(out) - 1
        if line_length > width and last_break >= 0:
            out[last_break] = "\n"
            line_length = len(out) - 1 - last_break
            last_break = -1
    return "".join(out)


class _TextConverter(HTMLParser):
    """Sanitised article HTML to readable plain text: paragraphs, lists, links, quotes."""

    _BLOCKS = {"p", "div", "h2", "h3", "h4", "blockquote", "figure", "figcaption", "table",
               "tr", "ul", "ol", "pre"}  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._links: list[str | None] = []
        self._quote = 0
        self._pre = 0

    def _newline(self, count: int = 2) -> None:
        text = "".join(self.out)
        trailing = len(text) - len(text.rstrip("\n"))
        if text and trailing < count:
            self.out.append("\n" * (count - trailing))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag in self._BLOCKS:
            self._newline()
        if tag == "blockquote":
            self._quote += 1
        elif tag == "pre":
            self._pre += 1
        elif tag == "br":
            self.out.append("\n")
        elif tag == "li":
            self._newline(1)
            self.out.append("- ")
        elif tag == "hr":
            self._newline()
            self.out.append("----------")
            self._newline()
        elif tag == "a":
            self._links.append(attributes.get("href"))
        elif tag == "img" and attributes.get("alt"):
            self.out.append(f"[{attributes['alt']}]")
        elif tag in {"td", "th"}:
            self.out.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._links:
            href = self._links.pop()
            if href and not href.startswith("#"):
                self.out.append(f" ({href})")
        elif tag == "blockquote":
            self._quote = max(0, self._quote - 1)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag in self._BLOCKS or tag == "li":
            self._newline(1 if tag == "li" else 2)

    def handle_data(self, data: str) -> None:
        if not self._pre:
            data = re.sub(r"\s+", " ", data)
            text = "".join(self.out[-1:])
            if not text or text.endswith(("\n", " ")):
                data = data.lstrip()
        if self._quote and data:
            data = data.replace("\n", "\n> ")
            text = "".join(self.out)
            if not text or text.endswith("\n"):
                data = "> " + data
        self.out.append(data)

    def text(self) -> str:
        lines = []
        for line in "".join(self.out).split("\n"):
            line = line.rstrip()
            if len(line) > 78:
                # Plain-text mail is read at 78 columns; long words (links) stay whole.
                prefix = "> " if line.startswith("> ") else ""
                line = textwrap.fill(
                    line,
                    width=78,
                    subsequent_indent=prefix,
                    break_long_words=False,
                    break_on_hyphens=False,
                )
            lines.append(line)
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> str:
    converter = _TextConverter()
    converter.feed(html)
    converter.close()
    return converter.text()
