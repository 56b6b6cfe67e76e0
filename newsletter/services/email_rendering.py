"""The article email: rendered once per segment, then personalised per reader cheaply.

Rendering (templates, CSS inlining, the plain-text conversion) costs milliseconds, so
it happens once per segment (free, paid). What differs per reader (greeting, address,
unsubscribe link, headers) is put in by plain string replacement of placeholders.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from email.utils import parseaddr
from html import escape
from html.parser import HTMLParser
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


@dataclass(frozen=True)
class Reader:
    """What personalisation needs of a subscriber."""

    subscriber_id: int | None
    email: str
    name: str = ""


def absolutise_urls(html: str) -> str:
    """Site-relative src/href values become absolute on SITE_URL (mail has no base URL)."""
    return _RELATIVE_URL_RE.sub(lambda m: f"{m.group(1)}{settings.SITE_URL}/", html)


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
        cover_url = absolutise_urls(f'src="{article.cover_image.url}"')[5:-1]
    logo_url = ""
    if publication.logo:
        logo_url = absolutise_urls(f'src="{publication.logo.url}"')[5:-1]
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
    text = render_to_string("email/newsletter/article.txt", context)
    from_email = sender_address(publication)
    domain = _sender_domain(from_email)
    mailto = settings.EMAIL_UNSUBSCRIBE_MAILTO or publication.reply_to_email
    mailto = mailto or parseaddr(from_email)[1]
    return RenderedArticleEmail(
        subject=context["subject"],
        html=html,
        text=text,
        from_email=from_email,
        reply_to=(publication.reply_to_email,) if publication.reply_to_email else (),
        list_id=_list_id(publication, domain),
        domain=domain,
        mailto=mailto,
    )


def message_id(*, send_id: int, subscriber_id: int | None, domain: str) -> str:
    """Stable per (send, subscriber): a resent copy is recognisable as the same message."""
    digest = hashlib.sha256(
        f"{settings.SECRET_KEY}:{send_id}:{subscriber_id}".encode()
    ).hexdigest()[:16]
    return f"<broadside.{send_id}.{subscriber_id}.{digest}@{domain}>"


def personalise(
    *, rendered: RenderedArticleEmail, reader: Reader, send_id: int, subject_prefix: str = ""
) -> EmailMultiAlternatives:
    """One reader's message: their greeting, address and unsubscribe link and headers."""
    if reader.subscriber_id is not None:
        token = make_unsubscribe_token(subscriber_id=reader.subscriber_id)
        one_click = unsubscribe_url(subscriber_id=reader.subscriber_id)
    else:  # a test email to an editor who is not a subscriber
        token = "test"  # noqa: S105 (not a secret: the mailto subject of a test email)
        one_click = f"{settings.SITE_URL}/account/"
    greeting_html = f"<p>Hi {escape(reader.name)},</p>" if reader.name else ""
    greeting_text = f"Hi {reader.name},\n\n" if reader.name else ""
    html = (
        rendered.html.replace(UNSUBSCRIBE_PLACEHOLDER, escape(one_click))
        .replace(GREETING_PLACEHOLDER, greeting_html)
        .replace(EMAIL_PLACEHOLDER, escape(reader.email))
    )
    text = (
        rendered.text.replace(UNSUBSCRIBE_PLACEHOLDER, one_click)
        .replace(GREETING_PLACEHOLDER, greeting_text)
        .replace(EMAIL_PLACEHOLDER, reader.email)
    )
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
    message = EmailMultiAlternatives(
        subject=subject_prefix + rendered.subject,
        body=text,
        from_email=rendered.from_email,
        to=[reader.email],
        reply_to=list(rendered.reply_to) or None,
        headers=headers,
    )
    message.attach_alternative(html, "text/html")
    return message


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
        lines = [line.rstrip() for line in "".join(self.out).split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> str:
    converter = _TextConverter()
    converter.feed(html)
    converter.close()
    return converter.text()
