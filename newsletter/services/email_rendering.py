"""The article email: rendered once per segment, then personalised per reader cheaply.

Rendering (templates, CSS inlining, the plain-text conversion) costs milliseconds, so
it happens once per segment (free, paid). What differs per reader (greeting, address,
unsubscribe link, headers) is put in by plain string replacement of placeholders.

There is one encoding of a reader's message: the one the email library produces
(`personalise`, Django's EmailMultiAlternatives). For SMTP, `personalised_bytes`
produces the very same bytes from a prepared template without building a message
object, and only when it can: a reader whose values would change how the library
encodes or folds something (a line over 998 octets, an address needing encoding, a
header that would fold differently) gets None, and is built the ordinary way.
tests/newsletter/test_email_wire.py compares the two byte for byte.
"""

from __future__ import annotations

import functools
import hashlib
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, replace
from email.utils import formataddr
from html import escape, unescape
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote

import css_inline
from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.images import get_image_dimensions
from django.core.files.storage import default_storage
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.text import slugify

from config.mail import ascii_domain, date_header, parse_mailbox, sender_domain
from newsletter.models import Article, Delivery
from newsletter.services.attribution import ref_query
from newsletter.services.body_images import render_body
from newsletter.services.content import embeds_as_links, free_body, full_body
from newsletter.services.tracking import (
    TRACKING_PLACEHOLDER,
    add_open_pixel,
    delivery_token,
    track_links,
)
from publication.emails import reply_to_addresses, sender_address
from publication.models import Publication
from subscriptions.services.plans import upgrades_open
from subscriptions.services.tokens import absolute_url, make_unsubscribe_token

# Placeholders survive templates (no characters to escape) and the CSS inliner.
UNSUBSCRIBE_PLACEHOLDER = "@@broadside-unsubscribe-url@@"
GREETING_PLACEHOLDER = "@@broadside-greeting@@"
EMAIL_PLACEHOLDER = "@@broadside-email@@"
# Whole header values of the prepared wire message (see `prepare_wire_template`).
_HEADER_PLACEHOLDERS = {
    "To": "broadside-to@placeholder.invalid",
    "Date": "broadside-date-placeholder",
    "Message-ID": "<broadside-message-id@placeholder.invalid>",
    "List-Unsubscribe": "<broadside-list-unsubscribe-placeholder>",
    "Feedback-ID": "broadside-feedback-id-placeholder",
}
_CTE_PLACEHOLDER = "broadside-transfer-encoding"
# Mail lines may not exceed 998 octets (RFC 5322 section 2.1.1); Django encodes a part
# quoted-printable when one does. Rendered lines are wrapped well below it.
_LINE_LIMIT = 998
_MAX_LINE = 900
# Header lines the email library folds at 78 characters (email.policy.compat32).
_FOLD_AT = 78

# One pass over the message per reader: a reader's own values (a name may contain
# anything) are never searched for placeholders.
_READER_PLACEHOLDERS = re.compile(
    "|".join(
        map(
            re.escape,
            (
                UNSUBSCRIBE_PLACEHOLDER,
                GREETING_PLACEHOLDER,
                EMAIL_PLACEHOLDER,
                TRACKING_PLACEHOLDER,
            ),
        )
    )
)
_WIRE_PLACEHOLDERS = re.compile(
    b"(%s)"
    % b"|".join(
        re.escape(placeholder.encode())
        for placeholder in (
            UNSUBSCRIBE_PLACEHOLDER,
            GREETING_PLACEHOLDER,
            EMAIL_PLACEHOLDER,
            TRACKING_PLACEHOLDER,
            _CTE_PLACEHOLDER,
            *_HEADER_PLACEHOLDERS.values(),
        )
    )
)
# What `str.splitlines` (Django's long-line test) treats as a line break.
_LINE_BREAKS = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# A header word the library never splits: no whitespace and none of its split points.
_HEADER_WORDS = re.compile(r"[!-+\--:<-~]+,?(?: [!-+\--:<-~]+,?)*")
_PLAIN_ADDRESS = re.compile(r"[!#-'*+\-./0-9=?A-Z^-~]+@[A-Za-z0-9.\-]+")

_inliner = css_inline.CSSInliner(
    keep_style_tags=False, keep_at_rules=True, load_remote_stylesheets=False
)
_RELATIVE_URL_RE = re.compile(r"""(\b(?:src|href)=["'])/(?!/)""", re.IGNORECASE)
_FRAGMENT_URL_RE = re.compile(r"""(\bhref=["'])#""", re.IGNORECASE)


@dataclass(frozen=True)
class _WirePart:
    """One stretch of the prepared message: literal bytes and placeholders alternating."""

    pieces: list[bytes]
    ascii: bool  # the literal bytes are all ASCII
    # The lines (as Django's long-line test sees them) that hold reader values: the
    # octets of their literal text and the placeholders on them.
    lines: tuple[tuple[int, tuple[str, ...]], ...]


@dataclass(frozen=True)
class WireTemplate:
    boundary: str
    text: _WirePart  # the headers and the plain-text part
    html: _WirePart  # the html part and the closing boundary


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
    segment: str = Delivery.Segment.PAID
    feedback_label: str = "newsletter"
    # Carries the open pixel and links through the signed redirect (tracking.py).
    tracked: bool = False
    # The prepared MIME message, or None when every reader's is built field by field.
    wire_template: WireTemplate | None = None


@dataclass(frozen=True)
class Reader:
    """What personalisation needs of a subscriber."""

    subscriber_id: int | None
    email: str
    name: str = ""
    # The delivery whose token a tracked email's pixel and links carry.
    delivery_id: int | None = None


def absolutise_urls(html: str) -> str:
    """Site-relative src/href values become absolute on SITE_URL (mail has no base URL)."""
    return _RELATIVE_URL_RE.sub(lambda m: f"{m.group(1)}{settings.SITE_URL}/", html)


def fragments_on_page(html: str, *, page_url: str) -> str:
    """In-body links such as footnotes (`#fn-1`) point at the article's page: not every
    mail client follows a link within the message, and every one opens a web page at
    its fragment."""
    return _FRAGMENT_URL_RE.sub(lambda m: f"{m.group(1)}{page_url}#", html)


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
    """The sender's domain (IDNA), parsed by the email library from the From value."""
    return sender_domain(from_email)


def _list_id(publication: Publication, domain: str) -> str:
    """RFC 2919: an optional phrase (quoted or encoded by the email library) and <id>."""
    label = slugify(publication.name) or "newsletter"
    return formataddr((publication.name.strip(), f"{label}.{domain}"))


def render_article_email(
    *,
    article: Article,
    segment: str,
    publication: Publication | None = None,
    tracked: bool = False,
) -> RenderedArticleEmail:
    """Render the article email for one segment (free or paid readers).

    `tracked`: with the open pixel and every web link but the unsubscribe link through
    the signed redirect, for readers who have not opted out (the caller decides).
    """
    publication = publication or Publication.load()
    body, cut_at_paywall = email_body_parts(article=article, segment=segment)
    body = render_body(html=body, for_email=True)
    body = fragments_on_page(absolutise_urls(body), page_url=article_url(article))
    body = embeds_as_links(html=body)
    cover_url = ""
    cover_height = None
    if article.cover_image:
        cover_url = _absolute(article.cover_image.url)
        size = media_image_size(cover_url)
        cover_height = round(size[1] * CONTENT_WIDTH / size[0]) if size else None
    logo_url = ""
    if publication.logo:
        logo_url = _absolute(publication.logo.url)
    authors = list(article.authors.all()) if article.pk else []
    subject = article.email_subject or article.title
    context = {
        "publication": publication,
        "article": article,
        "subject": subject,
        "preheader": article.subtitle or publication.tagline,
        "article_url": article_url(article),
        "body_html": prepare_body_html(body),
        "body_text": html_to_text(body),
        "cover_url": cover_url,
        "cover_alt": _cover_alt(article),
        "cover_height": cover_height,
        "logo_url": logo_url,
        "authors": authors,
        "byline": ", ".join(a.display_name for a in authors),
        "cut_at_paywall": cut_at_paywall,
        # No upgrade to offer while no plan can be bought (Stripe off, or no priced plan).
        # With the article's ref: an upgrade or a donation from the email is credited to it.
        "upgrade_url": f"{settings.SITE_URL}/upgrade/{ref_query(article)}"
        if upgrades_open()
        else "",
        "donate_url": f"{settings.SITE_URL}/donate/{ref_query(article)}",
        "account_url": f"{settings.SITE_URL}/account/",
        "site_url": settings.SITE_URL,
        "unsubscribe_url": UNSUBSCRIBE_PLACEHOLDER,
        "greeting": GREETING_PLACEHOLDER,
        "reader_email": EMAIL_PLACEHOLDER,
        "tracked": tracked,
        "tracking_retention_months": round(settings.TRACKING_RETENTION_DAYS / 30.44),
    }
    html = _inliner.inline(render_to_string("email/newsletter/article.html", context))
    if tracked:
        # Once per segment: each reader's token is put in by placeholder replacement.
        html = add_open_pixel(track_links(html=html, article=article))
    html = wrap_html_lines(html)
    text = wrap_text_lines(render_to_string("email/newsletter/article.txt", context))
    from_email = sender_address(publication)
    domain = _sender_domain(from_email)
    mailto = settings.EMAIL_UNSUBSCRIBE_MAILTO or publication.reply_to_email
    mailto = mailto or parse_mailbox(from_email).addr_spec
    rendered = RenderedArticleEmail(
        subject=subject,
        html=html,
        text=text,
        from_email=from_email,
        reply_to=tuple(reply_to_addresses(publication)),
        list_id=_list_id(publication, domain),
        domain=domain,
        mailto=mailto,
        segment=segment,
        feedback_label=slugify(publication.name)[:40] or "newsletter",
        tracked=tracked,
    )
    return replace(rendered, wire_template=prepare_wire_template(rendered))


def _cover_alt(article: Article) -> str:
    """The cover's alt text: what a reader without images needs, never the caption
    again (the caption is printed under it)."""
    if article.cover_caption:
        return ""
    return article.title


def message_id(*, send_id: int, subscriber_id: int | None, domain: str) -> str:
    """Stable per (send, subscriber): a resent copy is recognisable as the same message."""
    digest = hashlib.sha256(
        f"{settings.SECRET_KEY}:{send_id}:{subscriber_id}".encode()
    ).hexdigest()[:16]
    return f"<broadside.{send_id}.{subscriber_id}.{digest}@{ascii_domain(domain)}>"


@dataclass(frozen=True)
class _ReaderValues:
    token: str
    one_click: str
    greeting_html: str
    greeting_text: str
    headers: dict[str, str]
    tracking: str


def _article_headers(
    *, to: str, date: str, message_id: str, list_unsubscribe: str, list_id: str, feedback_id: str
) -> dict[str, str]:
    """The newsletter's own headers, in the order both paths write them."""
    return {
        "Date": date,
        "Message-ID": message_id,
        # RFC 2369 and RFC 8058 (one-click): mailbox providers show an unsubscribe button.
        "List-Unsubscribe": list_unsubscribe,
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": list_id,  # RFC 2919
        # Gmail's feedback loop groups complaints by these fields (send, segment, list).
        "Feedback-ID": feedback_id,
    }


def _reader_values(
    *, rendered: RenderedArticleEmail, reader: Reader, send_id: int, date: str | None = None
) -> _ReaderValues:
    if reader.subscriber_id is not None:
        token = make_unsubscribe_token(subscriber_id=reader.subscriber_id)
        one_click = _unsubscribe_url(token)
    else:  # a test email to an editor who is not a subscriber
        token = "test"  # noqa: S105 (not a secret: the mailto subject of a test email)
        one_click = f"{settings.SITE_URL}/account/"
    mailto = f"mailto:{rendered.mailto}?subject={quote('unsubscribe ' + token)}"
    headers = _article_headers(
        to=reader.email,
        date=date or date_header(),
        message_id=message_id(
            send_id=send_id, subscriber_id=reader.subscriber_id, domain=rendered.domain
        ),
        list_unsubscribe=f"<{one_click}>, <{mailto}>",
        list_id=rendered.list_id,
        feedback_id=f"{send_id}:{rendered.segment}:{rendered.feedback_label}:broadside",
    )
    tracking = ""
    if rendered.tracked:
        if reader.delivery_id is None:  # its links would all answer 400
            raise ValueError("A tracked email is personalised for a delivery only.")
        tracking = delivery_token(reader.delivery_id)
    return _ReaderValues(
        tracking=tracking,
        token=token,
        one_click=one_click,
        greeting_html=f"<p>Hi {escape(reader.name)},</p>" if reader.name else "",
        greeting_text=f"Hi {reader.name},\n" if reader.name else "",
        headers=headers,
    )


def _unsubscribe_url(token: str) -> str:
    """`unsubscribe_url` for a token already made: one URL reversal per process, not
    one per reader (reversing and signing twice cost more than the rest of a message)."""
    prefix, suffix = _unsubscribe_url_parts(settings.SITE_URL)
    return f"{prefix}{token}{suffix}"


@functools.lru_cache(maxsize=4)
def _unsubscribe_url_parts(site_url: str) -> tuple[str, str]:
    marker = "broadside-token"
    url = absolute_url(reverse("subscriptions:unsubscribe", kwargs={"token": marker}))
    prefix, _, suffix = url.partition(marker)
    return prefix, suffix


def personalise(
    *,
    rendered: RenderedArticleEmail,
    reader: Reader,
    send_id: int,
    subject_prefix: str = "",
    date: str | None = None,
) -> EmailMultiAlternatives:
    """One reader's message: their greeting, address and unsubscribe link and headers.

    The reference encoding of every newsletter email: for backends other than SMTP (an
    anymail ESP reads the fields, not MIME bytes), and for readers `personalised_bytes`
    cannot serve. `date` is the Date header (now, by default).
    """
    values = _reader_values(rendered=rendered, reader=reader, send_id=send_id, date=date)
    html_values = {
        UNSUBSCRIBE_PLACEHOLDER: escape(values.one_click),
        GREETING_PLACEHOLDER: values.greeting_html,
        EMAIL_PLACEHOLDER: escape(reader.email),
        TRACKING_PLACEHOLDER: values.tracking,
    }
    text_values = {
        UNSUBSCRIBE_PLACEHOLDER: values.one_click,
        GREETING_PLACEHOLDER: values.greeting_text,
        EMAIL_PLACEHOLDER: reader.email,
        TRACKING_PLACEHOLDER: values.tracking,
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


# The per-reader values of a provider's batch call (`batch_message`, `merge_values`),
# each in the form its part needs (escaped in the html part).
MERGE_FIELDS = {
    "html": {
        UNSUBSCRIBE_PLACEHOLDER: "unsubscribe_html",
        GREETING_PLACEHOLDER: "greeting_html",
        EMAIL_PLACEHOLDER: "email_html",
        TRACKING_PLACEHOLDER: "tracking",
    },
    "text": {
        UNSUBSCRIBE_PLACEHOLDER: "unsubscribe_text",
        GREETING_PLACEHOLDER: "greeting_text",
        EMAIL_PLACEHOLDER: "email_text",
        TRACKING_PLACEHOLDER: "tracking",
    },
}


def batch_message(
    *,
    rendered: RenderedArticleEmail,
    recipients: list[str],
    send_id: int,
    merge_field: Callable[[str], str],
) -> EmailMultiAlternatives:
    """One segment's message for many readers at once, for a provider's batch API.

    Where each reader's values go, the provider's merge syntax (`merge_field(name)`,
    e.g. Mailgun's `%recipient.name%`); the values themselves, and the headers that
    differ per reader, come from `merge_values` as anymail's merge_data and
    merge_headers. The headers every copy shares are set here.
    """
    html = _READER_PLACEHOLDERS.sub(
        lambda m: merge_field(MERGE_FIELDS["html"][m.group()]), rendered.html
    )
    text = _READER_PLACEHOLDERS.sub(
        lambda m: merge_field(MERGE_FIELDS["text"][m.group()]), rendered.text
    )
    shared = _article_headers(
        to="",
        date="",
        message_id="",
        list_unsubscribe="",
        list_id=rendered.list_id,
        feedback_id=f"{send_id}:{rendered.segment}:{rendered.feedback_label}:broadside",
    )
    # The provider dates each copy and gives it its Message-ID; List-Unsubscribe is the
    # reader's own (merge headers).
    for name in ("Date", "Message-ID", "List-Unsubscribe"):
        del shared[name]
    message = EmailMultiAlternatives(
        subject=rendered.subject,
        body=text,
        from_email=rendered.from_email,
        to=recipients,
        reply_to=list(rendered.reply_to) or None,
        headers=shared,
    )
    message.attach_alternative(html, "text/html")
    return message


def merge_values(
    *, rendered: RenderedArticleEmail, reader: Reader, send_id: int
) -> tuple[dict[str, str], dict[str, str]]:
    """(merge data, merge headers) of one reader in a batch call (`batch_message`)."""
    values = _reader_values(rendered=rendered, reader=reader, send_id=send_id, date="-")
    data = {
        "unsubscribe_html": escape(values.one_click),
        "unsubscribe_text": values.one_click,
        "greeting_html": values.greeting_html,
        "greeting_text": values.greeting_text,
        "email_html": escape(reader.email),
        "email_text": reader.email,
        "tracking": values.tracking,
    }
    return data, {"List-Unsubscribe": values.headers["List-Unsubscribe"]}


def personalised_bytes(
    *, rendered: RenderedArticleEmail, reader: Reader, send_id: int, date: str | None = None
) -> tuple[bytes, str] | None:
    """(MIME bytes, Message-ID) for one reader, straight from the prepared template.

    The fast path for SMTP: no message object at all, and byte for byte what
    `personalise(...).message()` gives with the template's boundary. None when this
    reader's message must be built field by field instead.
    """
    template = rendered.wire_template
    if template is None:
        return None
    values = _reader_values(rendered=rendered, reader=reader, send_id=send_id, date=date)
    data = _personalised_wire(template, reader=reader, values=values)
    if data is None:
        return None
    return data, values.headers["Message-ID"]


def envelope_sender(rendered: RenderedArticleEmail) -> str:
    """The bare address for MAIL FROM."""
    return parse_mailbox(rendered.from_email).addr_spec


def prepare_wire_template(rendered: RenderedArticleEmail) -> WireTemplate | None:
    """The segment's complete MIME message with placeholders where each reader differs.

    Built by the email library itself, then cut at the placeholders. None when a part
    is not plain 7bit/8bit text (a line over 998 octets makes the library encode it
    quoted-printable, and a reader's value could not simply be put in): then every
    message is built the ordinary way.
    """
    message = EmailMultiAlternatives(
        subject=rendered.subject,
        body=rendered.text,
        from_email=rendered.from_email,
        to=[_HEADER_PLACEHOLDERS["To"]],
        reply_to=list(rendered.reply_to) or None,
        headers=_article_headers(
            to=_HEADER_PLACEHOLDERS["To"],
            date=_HEADER_PLACEHOLDERS["Date"],
            message_id=_HEADER_PLACEHOLDERS["Message-ID"],
            list_unsubscribe=_HEADER_PLACEHOLDERS["List-Unsubscribe"],
            list_id=rendered.list_id,
            feedback_id=_HEADER_PLACEHOLDERS["Feedback-ID"],
        ),
    )
    message.attach_alternative(rendered.html, "text/html")
    mime: Any = message.message()  # Django's SafeMIMEMultipart: as_bytes takes linesep
    data: bytes = mime.as_bytes(linesep="\r\n")
    boundary = str(mime.get_boundary())
    separator = b"\r\n--" + boundary.encode() + b"\r\n"
    first = data.find(separator)
    html_start = data.find(separator, first + 1)
    if first < 0 or html_start < 0:
        return None
    head, html_part = data[:html_start], data[html_start:]
    split: list[bytes] = []
    for stretch in (head, html_part):
        encoding = re.search(rb"\r\nContent-Transfer-Encoding: (7bit|8bit)\r\n", stretch)
        if encoding is None:
            return None  # quoted-printable or base64
        split.append(
            stretch[: encoding.start(1)] + _CTE_PLACEHOLDER.encode() + stretch[encoding.end(1) :]
        )
    expected = {
        UNSUBSCRIBE_PLACEHOLDER: rendered.html.count(UNSUBSCRIBE_PLACEHOLDER)
        + rendered.text.count(UNSUBSCRIBE_PLACEHOLDER),
        GREETING_PLACEHOLDER: rendered.html.count(GREETING_PLACEHOLDER)
        + rendered.text.count(GREETING_PLACEHOLDER),
        EMAIL_PLACEHOLDER: rendered.html.count(EMAIL_PLACEHOLDER)
        + rendered.text.count(EMAIL_PLACEHOLDER),
        TRACKING_PLACEHOLDER: rendered.html.count(TRACKING_PLACEHOLDER)
        + rendered.text.count(TRACKING_PLACEHOLDER),
        _CTE_PLACEHOLDER: 2,
        **dict.fromkeys(_HEADER_PLACEHOLDERS.values(), 1),
    }
    joined = b"".join(split)
    if any(joined.count(p.encode()) != n for p, n in expected.items()):
        return None
    for name, placeholder in _HEADER_PLACEHOLDERS.items():
        if f"\r\n{name}: {placeholder}\r\n".encode() not in split[0]:
            return None  # the library folded or encoded it: cannot be filled in
    return WireTemplate(
        boundary=boundary,
        text=_wire_part(split[0], payload=rendered.text),
        html=_wire_part(split[1], payload=rendered.html),
    )


def _wire_part(stretch: bytes, *, payload: str) -> _WirePart:
    lines = tuple(
        (
            len(_READER_PLACEHOLDERS.sub("", line).encode(errors="surrogateescape")),
            tuple(_READER_PLACEHOLDERS.findall(line)),
        )
        for line in payload.splitlines()
        if _READER_PLACEHOLDERS.search(line)
    )
    literal = b"".join(_WIRE_PLACEHOLDERS.split(stretch)[::2])
    return _WirePart(pieces=_WIRE_PLACEHOLDERS.split(stretch), ascii=literal.isascii(), lines=lines)


def _header_value(name: str, value: str) -> bytes | None:
    """A header value as the email library folds it (compat32, 78 columns), without
    "Name: " in front and the final line break; None for a value whose folding is not
    mirrored here (only: a value that fits on the line, or one or two plain words,
    the first perhaps ending in a comma, as in List-Unsubscribe)."""
    if not _HEADER_WORDS.fullmatch(value):
        return None
    if len(name) + 2 + len(value) <= _FOLD_AT:
        return value.encode()
    words = value.split(" ")
    if len(words) > 2 or words[-1].endswith(","):
        return None
    out = ""
    column = len(name) + 2
    for index, word in enumerate(words):
        separator = " " if index else ""
        if column + len(separator) + len(word) <= _FOLD_AT:
            out += separator + word
            column += len(separator) + len(word)
        else:
            out += "\r\n " + word
            column = 1 + len(word)
    return out.encode()


def _fits(part: _WirePart, values: dict[str, str]) -> bool:
    """Whether no line with reader values exceeds 998 octets (as Django measures)."""
    for literal, placeholders in part.lines:
        length = literal
        for placeholder in placeholders:
            value = values[placeholder]
            length += max(len(line.encode()) for line in value.split("\n"))
        if length > _LINE_LIMIT:
            return False
    return True


def _personalised_wire(
    template: WireTemplate, *, reader: Reader, values: _ReaderValues
) -> bytes | None:
    headers = values.headers
    if not _PLAIN_ADDRESS.fullmatch(reader.email):
        return None  # an address the library would encode or fold
    if _LINE_BREAKS.search(reader.name) or template.boundary in reader.name:
        return None
    text_values = {
        GREETING_PLACEHOLDER: values.greeting_text,
        EMAIL_PLACEHOLDER: reader.email,
        UNSUBSCRIBE_PLACEHOLDER: values.one_click,
        TRACKING_PLACEHOLDER: values.tracking,
    }
    html_values = {
        GREETING_PLACEHOLDER: values.greeting_html,
        EMAIL_PLACEHOLDER: escape(reader.email),
        UNSUBSCRIBE_PLACEHOLDER: escape(values.one_click),
        TRACKING_PLACEHOLDER: values.tracking,
    }
    if not (_fits(template.text, text_values) and _fits(template.html, html_values)):
        return None  # the library would encode that part quoted-printable
    text_bytes = {p.encode(): _wire_bytes(v) for p, v in text_values.items()}
    html_bytes = {p.encode(): _wire_bytes(v) for p, v in html_values.items()}
    for name, placeholder in _HEADER_PLACEHOLDERS.items():
        folded = _header_value(name, headers.get(name, reader.email))
        if folded is None:
            return None
        text_bytes[placeholder.encode()] = folded
    text_bytes[_CTE_PLACEHOLDER.encode()] = _transfer_encoding(template.text, text_bytes)
    html_bytes[_CTE_PLACEHOLDER.encode()] = _transfer_encoding(template.html, html_bytes)
    return _fill(template.text.pieces, text_bytes) + _fill(template.html.pieces, html_bytes)


def _transfer_encoding(part: _WirePart, values: dict[bytes, bytes]) -> bytes:
    """7bit for an all-ASCII part, 8bit otherwise, as the email library labels it."""
    ascii_values = all(values[p].isascii() for p in part.pieces[1::2] if p in values)
    return b"7bit" if part.ascii and ascii_values else b"8bit"


def _fill(pieces: list[bytes], values: dict[bytes, bytes]) -> bytes:
    """Join the literal pieces with each placeholder's value (they alternate)."""
    filled = pieces.copy()
    filled[1::2] = [values[placeholder] for placeholder in pieces[1::2]]
    return b"".join(filled)


def _wire_bytes(value: str) -> bytes:
    """A value as it must appear in the message: UTF-8, with CRLF line endings."""
    return value.replace("\n", "\r\n").encode()


def wrap_text_lines(text: str, width: int = 78) -> str:
    """Plain text with no line over 998 octets: a line without spaces that long (a
    paragraph of Chinese, say) is cut every `width` characters."""
    if all(len(line.encode()) <= _MAX_LINE for line in text.splitlines()):
        return text
    lines = []
    for line in text.split("\n"):
        if len(line.encode()) > _MAX_LINE:
            lines.extend(
                textwrap.wrap(line, width=width, break_on_hyphens=False, drop_whitespace=True)
            )
        else:
            lines.append(line)
    return "\n".join(lines)


def prepare_body_html(body: str) -> str:
    """The article body as email clients need it.

    Images get the width of the column (desktop Outlook otherwise shows a 1,600 px
    upload at 1,600 px) and, when the file is ours, the matching height; figures become
    plain blocks without the browsers' 40 px side margins (Outlook, Yahoo and AOL do not
    know the HTML5 elements).
    """
    body = _EMAIL_IMG_RE.sub(_size_image, body)
    body = re.sub(r"<figure\b[^>]*>", '<div class="figure" style="margin: 0 0 20px;">', body)
    body = body.replace("</figure>", "</div>")
    body = re.sub(r"<figcaption\b[^>]*>", '<p class="caption">', body)
    return body.replace("</figcaption>", "</p>")


_EMAIL_IMG_RE = re.compile(r"<img\b([^>]*)>", re.IGNORECASE)
_SRC_RE = re.compile(r"""\bsrc=(["'])(.*?)\1""", re.IGNORECASE | re.DOTALL)
CONTENT_WIDTH = 536  # the column inside the 600 px card, less its padding
_IMAGE_STYLE = "display: block; width: 100%; max-width: 100%; height: auto; border: 0;"


def _size_image(match: re.Match[str]) -> str:
    attributes = match.group(1).rstrip("/ ")
    if re.search(r"\bwidth=", attributes, re.IGNORECASE):
        return f'<img{attributes} style="max-width: 100%; height: auto; border: 0;">'
    src = _SRC_RE.search(attributes)
    size = media_image_size(unescape(src.group(2))) if src else None
    width = CONTENT_WIDTH
    if size is not None:
        width = min(size[0], CONTENT_WIDTH)
        attributes += f' height="{round(size[1] * width / size[0])}"'
    style = _IMAGE_STYLE if width == CONTENT_WIDTH else "max-width: 100%; height: auto; border: 0;"
    return f'<img{attributes} width="{width}" style="{style}">'


def media_image_size(url: str) -> tuple[int, int] | None:
    """(width, height) of an uploaded image this site serves, or None."""
    prefix = f"{settings.SITE_URL}{settings.MEDIA_URL}"
    if not url.startswith((prefix, settings.MEDIA_URL)):
        return None
    name = (
        url.removeprefix(prefix) if url.startswith(prefix) else url.removeprefix(settings.MEDIA_URL)
    )
    try:
        with default_storage.open(name) as handle:
            width, height = get_image_dimensions(handle)
    except (OSError, ValueError, SuspiciousFileOperation):
        return None
    return (width, height) if width and height else None


def wrap_html_lines(html: str, width: int = _MAX_LINE) -> str:
    """Break over-long lines (counted in octets) where it does not change the rendering.

    Mail lines may not exceed 998 octets (RFC 5322). A newline may replace a space in
    text (browsers collapse whitespace) or between attributes inside a tag, never in a
    quoted attribute value or inside <pre>. A line with no such space (Chinese or
    Japanese text, a long unbroken word) is broken inside an empty HTML comment,
    which nothing renders.
    """
    if all(len(line.encode()) <= width for line in html.splitlines()):
        return html
    out: list[str] = []
    in_tag = False
    in_comment = False
    in_entity = False
    quote_char = ""
    raw_text = ""  # inside <style>, <title>, <script>: neither break nor comment
    in_pre = False
    line_octets = 0
    last_break = -1  # index in `out` of the last breakable space on this line
    octets_after_break = 0
    for index, char in enumerate(html):
        if char == "\n":
            line_octets = 0
            last_break = -1
            out.append(char)
            continue
        size = len(char.encode(errors="surrogatepass"))
        if in_comment:
            if html.startswith("-->", index - 2) and char == ">":
                in_comment = False
        elif in_tag:
            if quote_char:
                if char == quote_char:
                    quote_char = ""
            elif char in "\"'":
                quote_char = char
            elif char == ">":
                in_tag = False
        elif raw_text:
            if html[index : index + len(raw_text) + 2].lower() == f"</{raw_text}":
                raw_text = ""
                in_tag = True
        elif char == "<":
            lowered = html[index : index + 9].lower()
            if lowered.startswith("<!--"):
                in_comment = True
            else:
                in_tag = True
                if lowered.startswith("<pre"):
                    in_pre = True
                elif lowered.startswith("</pre"):
                    in_pre = False
                for element in ("style", "title", "script", "textarea"):
                    if re.match(rf"<{element}\b", lowered):
                        raw_text = element
        elif char == "&":
            in_entity = True
        elif in_entity and not (char.isalnum() or char == "#"):
            in_entity = False
        breakable = char == " " and not quote_char and not in_pre and not in_comment
        if (
            line_octets + size > width
            and last_break < 0
            and not (in_tag or in_comment or raw_text or in_entity)
            and char != "&"
        ):
            out.append("<!--\n-->")
            line_octets = 3
        out.append(char)
        line_octets += size
        if breakable:
            last_break = len(out) - 1
            octets_after_break = 0
        elif last_break >= 0:
            octets_after_break += size
        if line_octets > width and last_break >= 0:
            out[last_break] = "\n"
            line_octets = octets_after_break
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
