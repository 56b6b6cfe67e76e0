import email
import email.policy
import io
import re
from email.message import EmailMessage
from html.parser import HTMLParser

import pytest
from django.core.files.base import ContentFile
from django.test import Client
from PIL import Image

from newsletter.models import Article, Delivery
from newsletter.services.email_rendering import (
    Reader,
    html_to_text,
    message_id,
    personalise,
    personalised_bytes,
    render_article_email,
    wrap_html_lines,
)
from publication.models import Publication
from subscriptions.models import Subscriber
from tests.factories import ArticleFactory, AuthorFactory, SubscriberFactory

pytestmark = pytest.mark.django_db

BODY = (
    '<p>Free opening with <a href="/p/earlier/">a link</a>.</p>'
    '<p><img src="/media/inline.png" alt="A chart"></p>'
    '<hr class="paywall">'
    "<p>Paid analysis: the secret.</p>"
)


@pytest.fixture
def publication():
    publication = Publication.load()
    publication.name = "The Broadside"
    publication.tagline = "Geopolitics, weekly"
    publication.sender_name = "The Broadside"
    publication.sender_email = "letters@broadside.example"
    publication.reply_to_email = "editor@broadside.example"
    publication.kofi_url = "https://ko-fi.com/broadside"
    publication.telegram_channel_url = "https://t.me/broadside"
    publication.footer_text = "1 Harbour Street, Portsmouth"
    publication.save()
    return publication


@pytest.fixture
def article():
    article = ArticleFactory(
        title="The Straits",
        subtitle="Who holds the chokepoints",
        body=BODY,
        visibility=Article.Visibility.PAID,
        cover_caption="Tankers at anchor",
    )
    article.cover_image.save("cover.jpg", ContentFile(b"jpeg"), save=True)
    article.authors.add(AuthorFactory(display_name="Ada Marlowe"))
    return article


def parsed(message) -> EmailMessage:
    return parsed_bytes(message.message().as_bytes(linesep="\r\n"))


def parsed_bytes(raw: bytes) -> EmailMessage:
    result = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(result, EmailMessage)
    return result


def built(rendered, subscriber: Subscriber, *, wire: bool, send_id: int = 1) -> EmailMessage:
    """The reader's message as an ESP gets it (fields) or as SMTP gets it (prepared bytes)."""
    if not wire:
        return parsed(personalise(rendered=rendered, reader=reader(subscriber), send_id=send_id))
    prepared = personalised_bytes(rendered=rendered, reader=reader(subscriber), send_id=send_id)
    assert prepared is not None
    return parsed_bytes(prepared[0])


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def reader(subscriber: Subscriber) -> Reader:
    return Reader(subscriber_id=subscriber.pk, email=subscriber.email, name=subscriber.name)


@pytest.mark.parametrize("wire", [False, True])
def test_free_readers_email_stops_at_the_paywall_with_an_upgrade_button(
    publication, article, wire, plans_on_sale
):
    subscriber = SubscriberFactory()
    rendered = render_article_email(article=article, segment=Delivery.Segment.FREE)

    message = built(rendered, subscriber, wire=wire)

    text, html = parts(message)
    assert "Free opening" in text and "Free opening" in html
    assert "secret" not in text and "secret" not in html
    assert "Paid analysis" not in message.as_string()
    # The button names the article, so an upgrade from it is credited to it.
    upgrade = f"http://testserver/upgrade/?ref={article.slug}"
    assert f'href="{upgrade}"' in html
    assert upgrade in text


@pytest.mark.parametrize("wire", [False, True])
def test_paid_readers_email_has_the_whole_article_and_no_paywall_box(publication, article, wire):
    subscriber = SubscriberFactory()
    rendered = render_article_email(article=article, segment=Delivery.Segment.PAID)

    text, html = parts(built(rendered, subscriber, wire=wire))

    assert "Paid analysis: the secret." in text
    assert "Paid analysis: the secret." in html
    assert "/upgrade/" not in html
    assert 'class="paywall"' not in html  # the marker itself is not sent


def test_public_articles_go_out_whole_to_free_readers(publication, article):
    article.visibility = Article.Visibility.PUBLIC
    article.save()

    rendered = render_article_email(article=article, segment=Delivery.Segment.FREE)

    assert "Paid analysis: the secret." in rendered.html
    assert "/upgrade/" not in rendered.html


def test_a_paid_article_without_a_marker_sends_free_readers_no_body_text(
    publication, plans_on_sale
):
    article = ArticleFactory(body="<p>All of it is paid.</p>", visibility=Article.Visibility.PAID)

    rendered = render_article_email(article=article, segment=Delivery.Segment.FREE)

    assert "All of it is paid" not in rendered.html
    assert "All of it is paid" not in rendered.text
    assert "/upgrade/" in rendered.html


def test_the_email_has_the_publication_cover_byline_and_footer_with_absolute_urls(
    publication, article
):
    subscriber = SubscriberFactory(name="Grace")
    rendered = render_article_email(article=article, segment=Delivery.Segment.PAID)
    text, html = parts(parsed(personalise(rendered=rendered, reader=reader(subscriber), send_id=1)))

    assert "The Broadside" in html and "Geopolitics, weekly" in html
    assert re.search(r'<img src="http://testserver/media/covers/cover[^"]*\.jpg"', html)
    assert "Tankers at anchor" in html
    assert "Ada Marlowe" in html and "Ada Marlowe" in text
    assert 'src="http://testserver/media/inline.png"' in html
    assert 'href="http://testserver/p/earlier/"' in html
    assert 'href="http://testserver/p/' + article.slug + '/"' in html
    assert "https://ko-fi.com/broadside" in html and "https://t.me/broadside" in html
    assert "1 Harbour Street, Portsmouth" in html and "1 Harbour Street, Portsmouth" in text
    assert "Hi Grace," in html and "Hi Grace," in text
    assert subscriber.email in html
    # CSS is inlined; only the responsive media query stays in a <style> element.
    assert 'style="' in html and "<style>@media" in html.replace("\n", "")
    outside_outlook = re.sub(r"<!--\[if mso\]>.*?<!\[endif\]-->", "", html, flags=re.S)
    assert outside_outlook.count("<style") == 1  # the other is desktop Outlook's own


def test_headers_offer_one_click_unsubscribe_and_identify_the_list(publication, article):
    subscriber = SubscriberFactory()
    rendered = render_article_email(article=article, segment=Delivery.Segment.FREE)
    message = parsed(personalise(rendered=rendered, reader=reader(subscriber), send_id=7))

    assert message["From"] == "The Broadside <letters@broadside.example>"
    assert message["Reply-To"] == "editor@broadside.example"
    assert message["To"] == subscriber.email
    assert message["Subject"] == "The Straits"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["List-Id"] == "The Broadside <the-broadside.broadside.example>"
    unsubscribe = str(message["List-Unsubscribe"]).strip()
    https_url, mailto = re.fullmatch(r"<([^>]+)>, <([^>]+)>", unsubscribe).groups()
    assert https_url.startswith("http://testserver/unsubscribe/")
    assert mailto.startswith("mailto:editor@broadside.example?subject=unsubscribe%20")
    assert message["Message-ID"] == message_id(
        send_id=7, subscriber_id=subscriber.pk, domain="broadside.example"
    )
    assert message["Date"]


def test_message_ids_are_stable_per_send_and_reader_and_differ_between_them():
    first = message_id(send_id=1, subscriber_id=1, domain="example.com")

    assert first == message_id(send_id=1, subscriber_id=1, domain="example.com")
    assert first != message_id(send_id=1, subscriber_id=2, domain="example.com")
    assert first != message_id(send_id=2, subscriber_id=1, domain="example.com")
    assert re.fullmatch(r"<[\w.]+@example\.com>", first)


def test_the_one_click_url_in_the_header_unsubscribes_the_reader(publication, article):
    client = Client(enforce_csrf_checks=True)  # as a mail provider posts: no cookie, no token
    subscriber = SubscriberFactory()
    rendered = render_article_email(article=article, segment=Delivery.Segment.FREE)
    message = built(rendered, subscriber, wire=True)  # as the workers send it over SMTP
    https_url = re.match(r"<([^>]+)>", str(message["List-Unsubscribe"]).strip()).group(1)
    path = https_url.removeprefix("http://testserver")

    # RFC 8058: a POST with this body, no cookies and no CSRF token.
    response = client.post(
        path, data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code in (200, 202, 204, 302)
    subscriber.refresh_from_db()
    assert subscriber.status == Subscriber.Status.UNSUBSCRIBED


def test_the_prepared_wire_message_equals_the_one_built_field_by_field(publication, article):
    subscriber = SubscriberFactory(name="Zoë <b>&</b>")
    rendered = render_article_email(article=article, segment=Delivery.Segment.FREE)
    assert rendered.wire_template is not None

    slow = built(rendered, subscriber, wire=False, send_id=3)
    fast = built(rendered, subscriber, wire=True, send_id=3)

    for header in ("From", "To", "Reply-To", "Subject", "Message-ID", "List-Unsubscribe",
                   "List-Unsubscribe-Post", "List-Id", "MIME-Version"):  # fmt: skip
        assert str(fast[header]).strip() == str(slow[header]).strip(), header
    assert fast.get_content_type() == slow.get_content_type() == "multipart/alternative"
    assert fast["Date"]
    assert parts(fast) == parts(slow)
    assert "Hi Zoë &lt;b&gt;&amp;&lt;/b&gt;," in parts(fast)[1]  # the name is escaped


def test_long_lines_are_wrapped_so_the_message_goes_out_as_8bit_text(publication):
    long_paragraph = "<p>" + "A sentence that goes on. " * 200 + "</p>"
    article = ArticleFactory(body=long_paragraph + "<pre>keep   this  spacing</pre>")

    rendered = render_article_email(article=article, segment=Delivery.Segment.PAID)

    assert max(len(line) for line in rendered.html.splitlines()) <= 900
    assert max(len(line) for line in rendered.text.splitlines()) <= 78
    assert "keep   this  spacing" in rendered.html
    assert rendered.wire_template is not None


def test_wrapping_breaks_only_where_whitespace_does_not_matter():
    html = '<p title="a b c">' + "word " * 300 + '</p><pre>x    y</pre><a href="/x y">z</a>'

    wrapped = wrap_html_lines(html, width=100)

    assert max(len(line) for line in wrapped.splitlines()) <= 100
    assert wrapped.replace("\n", " ") == html
    assert '<p title="a b c">' in wrapped
    assert "<pre>x    y</pre>" in wrapped


def test_plain_text_keeps_paragraphs_lists_links_and_quotes():
    html = (
        "<h2>Heading</h2><p>One <strong>bold</strong> line<br>and a break.</p>"
        '<ul><li>first</li><li>second <a href="https://example.com/x">link</a></li></ul>'
        "<blockquote><p>Quoted words.</p></blockquote><p>&amp; after</p>"
    )

    assert html_to_text(html) == (
        "Heading\n\nOne bold line\nand a break.\n\n- first\n- second link "
        "(https://example.com/x)\n\n> Quoted words.\n\n& after"
    )


def test_names_and_titles_are_escaped_in_html(publication):
    article = ArticleFactory(title="<script>alert(1)</script>", body="<p>x</p>")
    subscriber = SubscriberFactory(name="<img src=x onerror=alert(1)>")
    rendered = render_article_email(article=article, segment=Delivery.Segment.PAID)

    _, html = parts(parsed(personalise(rendered=rendered, reader=reader(subscriber), send_id=1)))

    assert "<script>" not in html
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


@pytest.mark.parametrize("wire", [False, True])
def test_a_readers_name_is_escaped_and_never_read_as_a_placeholder(publication, wire):
    name = "Zoë @@broadside-email@@ @@broadside-unsubscribe-url@@ <i>x</i>"
    subscriber = SubscriberFactory(name=name)
    article = ArticleFactory(body="<p>Plain ASCII only.</p>")
    rendered = render_article_email(article=article, segment=Delivery.Segment.PAID)
    assert rendered.text.isascii()  # so the template's text part alone would be 7bit

    result = built(rendered, subscriber, wire=wire)

    text, html = parts(result)
    assert f"Hi {name}," in text
    assert "Hi Zoë @@broadside-email@@ @@broadside-unsubscribe-url@@ &lt;i&gt;x&lt;/i&gt;," in html
    for part in (result.get_body(("plain",)), result.get_body(("html",))):
        assert part is not None
        assert part["Content-Transfer-Encoding"] in ("8bit", "quoted-printable", "base64")


class _Tags(HTMLParser):
    """Every start tag of a document with its attributes, comments apart."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.comments: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_comment(self, data):
        self.comments.append(data)


def tags_of(html: str) -> _Tags:
    parser = _Tags()
    parser.feed(html)
    return parser


def test_the_email_is_built_for_desktop_outlook_yahoo_and_dark_mode(
    publication, article, plans_on_sale
):
    rendered = render_article_email(article=article, segment=Delivery.Segment.FREE)
    _, html = parts(built(rendered, SubscriberFactory(), wire=True))
    document = tags_of(html)
    tables = [attrs for tag, attrs in document.tags if tag == "table"]
    images = [attrs for tag, attrs in document.tags if tag == "img"]

    # Layout: presentation tables, the card 600 px wide at most, Outlook's fixed column.
    assert tables and all(t.get("role") == "presentation" for t in tables)
    assert tables[0]["width"] == "100%"
    assert any("max-width: 600px" in t.get("style", "") for t in tables)
    assert any('[if mso]><table role="presentation" width="600"' in f"<!--{c}" for c in
               document.comments)  # fmt: skip
    # Images: sized for the column, never wider than it.
    assert len(images) == 2
    for image in images:
        assert image["width"].isdigit() and int(image["width"]) <= 536
        assert "max-width: 100%" in image["style"]
    assert not re.search(r"<figure|<figcaption", html)  # Outlook, Yahoo: no HTML5 elements
    # The bulletproof button: a coloured cell around the link.
    cells = [attrs for tag, attrs in document.tags if tag == "td" and attrs.get("bgcolor")]
    assert any(c.get("class") == "button-cell" for c in cells)
    # Dark mode and the hidden preheader.
    assert ("meta", {"name": "color-scheme", "content": "light dark"}) in document.tags
    assert "@media (prefers-color-scheme: dark)" in html
    preheader = next(a for t, a in document.tags if a.get("class") == "preheader")
    assert "mso-hide: all" in preheader["style"] and "display: none" in preheader["style"]
    assert "&zwnj;" in html or "\u200c" in html  # the filler after it


def test_the_cover_alt_text_does_not_repeat_its_caption(publication, article):
    rendered = render_article_email(article=article, segment=Delivery.Segment.PAID)
    cover = next(a for t, a in tags_of(rendered.html).tags if t == "img" and "covers/" in a["src"])
    assert cover["alt"] == ""
    assert rendered.html.count("Tankers at anchor") == 1

    article.cover_caption = ""
    rendered = render_article_email(article=article, segment=Delivery.Segment.PAID)
    cover = next(a for t, a in tags_of(rendered.html).tags if t == "img" and "covers/" in a["src"])
    assert cover["alt"] == "The Straits"


def test_an_uploaded_body_image_gets_its_height_for_the_column(publication, tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path
    image = io.BytesIO()
    Image.new("RGB", (1600, 900)).save(image, "PNG")
    (tmp_path / "uploads").mkdir()
    (tmp_path / "uploads" / "chart.png").write_bytes(image.getvalue())
    article = ArticleFactory(body='<p><img src="/media/uploads/chart.png" alt="A chart"></p>')

    rendered = render_article_email(article=article, segment=Delivery.Segment.PAID)

    chart = next(a for t, a in tags_of(rendered.html).tags if t == "img" and "chart" in a["src"])
    assert (chart["width"], chart["height"]) == ("536", "302")


@pytest.mark.parametrize("wire", [False, True])
def test_with_no_plan_on_sale_the_free_email_offers_no_upgrade(publication, article, wire):
    rendered = render_article_email(article=article, segment=Delivery.Segment.FREE)

    text, html = parts(built(rendered, SubscriberFactory(), wire=wire))

    assert "Free opening" in text and "Free opening" in html
    assert "Paid analysis" not in text and "Paid analysis" not in html
    assert "/upgrade/" not in html and "/upgrade/" not in text
    assert "for paid subscribers" in text and "for paid subscribers" in html
