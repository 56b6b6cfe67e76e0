"""The editor's desk: publish what the page shows, images, footnotes, the time zone, home."""

from __future__ import annotations

import io
import struct
import zlib
from datetime import UTC, datetime

import html5lib
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image

from newsletter.models import Article, BodyImage, EmailSend
from newsletter.services.body_images import (
    EMAIL_WIDTH,
    BodyImageError,
    render_body,
    store_body_image,
)
from newsletter.services.dates import long_date, long_datetime
from newsletter.services.email_rendering import render_article_email
from newsletter.services.footnotes import render_footnotes
from newsletter.services.publishing import publication_audience
from publication.validators import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE
from tests.factories import (
    ArticleFactory,
    AuthorFactory,
    MembershipFactory,
    PublishedArticleFactory,
    SubscriberFactory,
)

pytestmark = pytest.mark.django_db
NS = {"h": "http://www.w3.org/1999/xhtml"}


def _parse(html: str):
    return html5lib.parse(f"<!doctype html><body>{html}", namespaceHTMLElements=True)


def _png(width: int, height: int, colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def _truncated_png(width: int, height: int) -> bytes:
    """A PNG header claiming width x height, with a valid CRC and no image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    )


def _upload(data: bytes, name: str = "photo.png") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="image/png")


def _change_data(article: Article, editor_client, **overrides) -> dict[str, str]:
    change_url = reverse("admin:newsletter_article_change", args=[article.pk])
    page = editor_client.get(change_url)
    data = {
        "title": article.title,
        "slug": article.slug,
        "subtitle": article.subtitle,
        "body": article.body,
        "cover_caption": "",
        "publish_at_0": "",
        "publish_at_1": "",
        "visibility": article.visibility,
        "section": "",
        "email_subject": "",
        "email_audience": article.email_audience,
        "comments_enabled": "on",
        "external_id": "",
    }
    for inline in page.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in management.fields:
            data[f"{management.prefix}-{name}"] = management[name].value()
    data.update(overrides)
    return data


# --- Publish now saves the page first and confirms who gets it ------------------------


def test_publish_now_saves_the_unsaved_title_then_confirms_the_audience(editor_client):
    article = ArticleFactory(title="Old title", slug="the-piece")
    SubscriberFactory(email="free1@example.org")
    SubscriberFactory(email="free2@example.org")
    MembershipFactory(subscriber__email="paid@example.org")
    change_url = reverse("admin:newsletter_article_change", args=[article.pk])

    response = editor_client.post(
        change_url, _change_data(article, editor_client, title="New title", _publish="1")
    )

    confirm_url = reverse("admin:newsletter_article_publish", args=[article.pk])
    assert response.status_code == 302
    assert response["Location"] == confirm_url
    article.refresh_from_db()
    assert article.title == "New title"
    assert article.status == Article.Status.DRAFT  # nothing published before the confirmation
    page = editor_client.get(confirm_url).content.decode()
    assert "Email 3 readers: 1 paid, 2 free; no Telegram post" in page
    assert "New title" in page

    editor_client.post(confirm_url)
    article.refresh_from_db()
    assert article.status == Article.Status.PUBLISHED
    send = EmailSend.objects.get(article=article)
    assert send.recipient_count == 3


def test_publish_now_with_an_invalid_form_saves_and_publishes_nothing(editor_client):
    article = ArticleFactory(title="Kept title", slug="kept")
    change_url = reverse("admin:newsletter_article_change", args=[article.pk])

    response = editor_client.post(
        change_url, _change_data(article, editor_client, title="", _publish="1")
    )

    assert response.status_code == 200
    assert "Not saved and not published" in response.content.decode()
    article.refresh_from_db()
    assert article.title == "Kept title"
    assert article.status == Article.Status.DRAFT


def test_schedule_saves_publish_at_in_the_publication_time_zone(editor_client, settings):
    settings.TIME_ZONE = "America/New_York"
    article = ArticleFactory(slug="later")
    change_url = reverse("admin:newsletter_article_change", args=[article.pk])
    page = editor_client.get(change_url).content.decode()
    assert "In the publication's time zone, America/New_York" in page

    response = editor_client.post(
        change_url,
        _change_data(
            article,
            editor_client,
            publish_at_0="2030-07-01",
            publish_at_1="09:30",
            _schedule="1",
        ),
    )
    schedule_url = reverse("admin:newsletter_article_schedule", args=[article.pk])
    assert response["Location"] == schedule_url
    confirmation = editor_client.get(schedule_url).content.decode()
    assert "1 July 2030, 09:30 EDT" in confirmation
    editor_client.post(schedule_url)
    article.refresh_from_db()
    assert article.status == Article.Status.SCHEDULED
    assert article.publish_at == datetime(2030, 7, 1, 13, 30, tzinfo=UTC)


def test_the_confirmation_says_saved_only_after_a_save_and_names_the_zone_once(
    editor_client, settings
):
    settings.TIME_ZONE = "UTC"
    article = ArticleFactory(slug="direct", publish_at=datetime(2030, 7, 1, 14, 14, tzinfo=UTC))
    change_url = reverse("admin:newsletter_article_change", args=[article.pk])
    schedule_url = reverse("admin:newsletter_article_schedule", args=[article.pk])
    publish_url = reverse("admin:newsletter_article_publish", args=[article.pk])

    for url in (schedule_url, publish_url):  # opened directly: nothing was saved
        page = editor_client.get(url).content.decode()
        assert "ublishing" in page and "will:" in page
        assert "saved" not in page.lower()

    data = _change_data(
        article, editor_client, publish_at_0="2030-07-01", publish_at_1="14:14", _schedule="1"
    )
    assert editor_client.post(change_url, data)["Location"] == schedule_url
    page = editor_client.get(schedule_url).content.decode()
    assert "Your changes are saved." in page
    assert "1 July 2030, 14:14 UTC</strong>, publishing will" in page
    assert "(UTC)" not in page
    # Only the page that followed the save says so.
    assert "saved" not in editor_client.get(schedule_url).content.decode().lower()

    settings.TIME_ZONE = "America/New_York"
    page = editor_client.get(schedule_url).content.decode()
    assert "1 July 2030, 10:14 EDT</strong> (America/New_York)" in page


def test_the_test_email_button_saves_and_sends_the_page_as_it_is(editor_client, mailoutbox):
    article = ArticleFactory(title="Draft title", slug="draft-x")
    change_url = reverse("admin:newsletter_article_change", args=[article.pk])
    editor_client.post(
        change_url,
        _change_data(article, editor_client, title="Fresh title", _test_email="1"),
    )
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == ["editor@example.com"]
    assert "Fresh title" in mailoutbox[0].subject
    article.refresh_from_db()
    assert article.status == Article.Status.DRAFT


def test_publication_audience_counts_what_create_email_send_will_send():
    MembershipFactory(subscriber__email="p@example.org")
    SubscriberFactory(email="f@example.org")
    SubscriberFactory(email="gone@example.org", status="unsubscribed")
    paid_only = ArticleFactory(email_audience=Article.EmailAudience.PAID)
    nobody = ArticleFactory(email_audience=Article.EmailAudience.NOBODY)
    assert publication_audience(article=paid_only).summary() == (
        "Email 1 reader: 1 paid; no Telegram post"
    )
    assert publication_audience(article=nobody).summary() == "Email nobody; no Telegram post"


# --- Defaults that match the configuration -------------------------------------------


def test_a_new_article_has_telegram_off_when_telegram_is_not_configured(editor_client, settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    form = editor_client.get(reverse("admin:newsletter_article_add")).context["adminform"].form
    assert form.initial["post_to_telegram"] is False


def test_a_new_article_posts_to_telegram_when_it_is_configured(editor_client, telegram_api):
    form = editor_client.get(reverse("admin:newsletter_article_add")).context["adminform"].form
    assert form.initial["post_to_telegram"] is True


def test_a_new_article_has_the_editor_as_its_author(editor_client):
    from django.contrib.auth import get_user_model

    editor = get_user_model().objects.get(username="editor")
    author = AuthorFactory(user=editor)
    AuthorFactory()  # someone else
    form = editor_client.get(reverse("admin:newsletter_article_add")).context["adminform"].form
    assert form.initial["authors"] == [author.pk]


# --- Dates: one zone, one format -------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("UTC", "1 December 2026"),
        ("America/Los_Angeles", "30 November 2026"),
        ("Asia/Tokyo", "1 December 2026"),
    ],
)
def test_dates_are_shown_in_the_publication_time_zone(settings, zone, expected):
    settings.TIME_ZONE = zone
    assert long_date(datetime(2026, 12, 1, 3, 0, tzinfo=UTC)) == expected


def test_the_email_byline_uses_the_site_date_format_and_zone(settings):
    settings.TIME_ZONE = "America/Los_Angeles"
    article = PublishedArticleFactory(published_at=datetime(2026, 12, 1, 3, 0, tzinfo=UTC))
    rendered = render_article_email(article=article, segment="paid")
    assert "30 November 2026" in rendered.html
    assert "Nov." not in rendered.html


def test_a_scheduled_time_reads_with_its_zone(settings):
    settings.TIME_ZONE = "Europe/London"
    assert long_datetime(datetime(2026, 7, 1, 8, 0, tzinfo=UTC)) == "1 July 2026, 09:00 BST"


# --- Footnotes -------------------------------------------------------------------------

note_texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=80
).filter(lambda text: text.strip())


@given(notes=st.lists(note_texts, min_size=1, max_size=6))
@hypothesis_settings(max_examples=60, deadline=None)
def test_footnotes_are_numbered_in_order_and_linked_both_ways(notes):
    from html import escape

    body = "".join(
        f'<p>Claim {i}<sup data-note="{escape(note)}"></sup> continues.</p>'
        for i, note in enumerate(notes)
    )
    tree = _parse(render_footnotes(html=body))
    refs = tree.findall(".//h:sup/h:a", NS)
    assert [a.text for a in refs] == [str(n) for n in range(1, len(notes) + 1)]
    items = tree.findall(".//h:div[@class='footnotes']/h:ol/h:li", NS)
    assert len(items) == len(notes)
    for number, (ref, item, note) in enumerate(zip(refs, items, notes, strict=True), start=1):
        assert ref.get("href") == f"#fn-{number}"
        assert item.get("id") == f"fn-{number}"
        assert ref.get("id") == f"fnref-{number}"
        back = item.find(".//h:a", NS)
        assert back.get("href") == f"#fnref-{number}"
        paragraph = item.find("h:p", NS)
        assert (paragraph.text or "").strip() == " ".join(note.split())


def test_the_markup_around_a_note_is_kept_as_it_was_written():
    """Only the note's marker changes: tags with their attributes, character references,
    escaped text and self-closing tags come out as they went in."""
    before = '<p class="lede">It&#39;s &lt;b&gt;true&lt;/b&gt; &#x2014; <a href="https://example.com/a">so</a>'
    after = '<br/><img src="https://example.com/a.png" alt="A" /></p><h2>Next</h2>'
    rendered = render_footnotes(html=f'{before}<sup data-note="A source">x</sup>{after}')
    marker = '<sup><a id="fnref-1" href="#fn-1" aria-label="Note 1">1</a></sup>'
    assert rendered.startswith(f'{before}{marker}{after}<div class="footnotes">')


def test_a_free_reader_gets_only_the_notes_before_the_paywall():
    article = PublishedArticleFactory(
        visibility=Article.Visibility.PAID,
        body='<p>Free<sup data-note="Free source"></sup></p><hr class="paywall">'
        '<p>Paid<sup data-note="Secret source"></sup></p>',
    )
    free = render_article_email(article=article, segment="free").html
    paid = render_article_email(article=article, segment="paid").html
    assert "Free source" in free and "Secret source" not in free
    assert "Free source" in paid and "Secret source" in paid


def test_editor_notes_continue_after_imported_ones():
    body = (
        '<p>Old<sup><a id="fnref-1" href="#fn-1">1</a></sup></p>'
        '<p>New<sup data-note="Added later"></sup></p><p id="fn-1">Imported note</p>'
    )
    tree = _parse(render_footnotes(html=body))
    assert tree.find(".//h:li", NS).get("id") == "fn-2"
    assert tree.find(".//h:ol", NS).get("start") == "2"


def test_the_article_page_shows_linked_notes(client):
    PublishedArticleFactory(slug="noted", body='<p>Text<sup data-note="See the treaty."></sup></p>')
    page = client.get("/p/noted/").content.decode()
    tree = _parse(page)
    note = tree.find(".//h:li[@id='fn-1']", NS)
    assert note is not None
    assert "See the treaty." in "".join(note.itertext())


# --- Images in the body ------------------------------------------------------------


def test_an_uploaded_image_gets_renditions_srcset_on_the_site_and_a_fixed_width_in_email():
    stored = store_body_image(upload=_upload(_png(2400, 1600)))
    image = stored.image
    assert (image.width, image.height) == (2400, 1600)
    assert stored.width == 960 and stored.height == 640
    for name in [*image.renditions.values(), image.email_rendition, image.original]:
        assert default_storage.exists(name)
    with default_storage.open(image.email_rendition) as email_file:
        assert Image.open(email_file).size == (EMAIL_WIDTH, 400)

    body = f'<figure><img src="{stored.src}" alt="A harbour"><figcaption>Dawn</figcaption></figure>'
    site = _parse(render_body(html=body, for_email=False)).find(".//h:img", NS)
    assert site.get("width") == "960" and site.get("height") == "640"
    assert site.get("alt") == "A harbour"
    widths = [part.split()[1] for part in site.get("srcset").split(", ")]
    assert widths == ["480w", "960w", "1440w", "2000w"]
    mail = _parse(render_body(html=body, for_email=True)).find(".//h:img", NS)
    assert mail.get("width") == str(EMAIL_WIDTH)
    assert mail.get("src").endswith("/email600.jpg")
    assert mail.get("srcset") is None


def test_a_small_image_is_never_enlarged():
    stored = store_body_image(upload=_upload(_png(300, 200)))
    assert set(stored.image.renditions) == {"300"}
    assert (stored.width, stored.height) == (300, 200)


def test_a_transparent_png_keeps_its_transparency():
    buffer = io.BytesIO()
    Image.new("RGBA", (1000, 500), (0, 0, 0, 0)).save(buffer, "PNG")
    stored = store_body_image(upload=_upload(buffer.getvalue()))
    assert all(name.endswith(".png") for name in stored.image.renditions.values())


CAMERA = "Broadside Test Camera"


def _photo_with_gps(*, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    """A photo as a phone writes it: GPS position and camera make in its EXIF."""
    exif = Image.Exif()
    exif[0x010F] = CAMERA  # Make
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to show
    exif[0x8825] = {1: "N", 2: (38.0, 42.0, 30.0), 3: "W", 4: (9.0, 8.0, 20.0)}
    buffer = io.BytesIO()
    Image.new(mode, (1200, 800), (40, 90, 160)[: len(mode)]).save(buffer, fmt, exif=exif)
    data = buffer.getvalue()
    assert CAMERA.encode() in data  # the fixture really carries it
    return data


def assert_no_location_or_camera(name: str) -> None:
    with default_storage.open(name) as stored:
        data = stored.read()
    assert CAMERA.encode() not in data, name
    with Image.open(io.BytesIO(data)) as image:
        exif = image.getexif()
        assert 0x8825 not in exif and 0x010F not in exif, (name, dict(exif))
        assert "xmp" not in image.info, name


@pytest.mark.parametrize(("fmt", "mode"), [("JPEG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGB")])
def test_no_stored_file_of_a_body_image_keeps_the_photo_s_location_or_camera(fmt, mode):
    stored = store_body_image(
        upload=_upload(_photo_with_gps(fmt=fmt, mode=mode), name=f"p.{fmt.lower()}")
    )
    image = stored.image
    _, files = default_storage.listdir(f"body-images/{image.key}")
    assert files and image.original.rsplit("/", 1)[1] in files
    for name in files:
        assert_no_location_or_camera(f"body-images/{image.key}/{name}")
    # The orientation the camera recorded is applied, not lost with the metadata.
    with default_storage.open(image.original) as original:
        assert Image.open(original).size == (800, 1200)
    assert (image.width, image.height) == (800, 1200)


@given(
    width=st.integers(min_value=1, max_value=60_000),
    height=st.integers(min_value=1, max_value=60_000),
)
@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_truncated_png_claiming_any_size_is_refused_with_the_reason(width, height):
    with pytest.raises(BodyImageError) as refused:
        store_body_image(upload=_upload(_truncated_png(width, height)))
    message = str(refused.value)
    if width * height > MAX_IMAGE_PIXELS or max(width, height) > MAX_IMAGE_SIDE:
        assert "megapixels" in message
    else:
        assert "damaged or incomplete" in message
        assert "megapixels" not in message
    assert not BodyImage.objects.exists()


@given(data=st.binary(max_size=2000))
@hypothesis_settings(max_examples=40, deadline=None)
def test_any_file_that_is_not_a_whole_image_is_refused(data):
    with pytest.raises(BodyImageError):
        store_body_image(upload=_upload(b"not an image" + data, name="x.png"))


def test_a_file_over_the_byte_limit_is_refused(settings, monkeypatch):
    monkeypatch.setattr("publication.validators.MAX_IMAGE_BYTES", 1000)
    with pytest.raises(BodyImageError, match="images may be at most"):
        store_body_image(upload=_upload(_png(400, 400, (1, 2, 3)) + b"\0" * 2000))


def test_the_upload_endpoint_answers_json_and_requires_staff(editor_client):
    from django.test import Client

    url = reverse("admin:newsletter_bodyimage_upload")
    ok = editor_client.post(url, {"image": _upload(_png(1200, 900))})
    assert ok.status_code == 200
    assert ok.json()["width"] == 960
    bad = editor_client.post(url, {"image": _upload(_truncated_png(20000, 20000))})
    assert bad.status_code == 400
    assert "megapixels" in bad.json()["error"]
    anonymous = Client().post(url, {"image": _upload(_png(10, 10))})
    assert anonymous.status_code == 302  # to the sign-in
    assert BodyImage.objects.count() == 1


# --- The admin's home ----------------------------------------------------------------


def test_the_admin_home_shows_send_results_audience_and_whats_waiting(editor_client):
    published = PublishedArticleFactory(title="Last week's piece")
    EmailSend.objects.create(
        article=published, audience="everyone", status="sent", recipient_count=5,
        sent_count=4, failed_count=1,
    )  # fmt: skip
    ArticleFactory(title="A draft in progress")
    SubscriberFactory()
    MembershipFactory()
    page = editor_client.get(reverse("admin:index"))
    html = page.content.decode()
    assert "Last week&#x27;s piece" in html
    assert "A draft in progress" in html
    groups = [group["name"] for group in page.context["app_list"]]
    assert groups == ["Writing", "Audience", "Money", "Settings"]
    dashboard = page.context["dashboard"]
    assert dashboard.recent[0].email_send.failed_count == 1
    assert dashboard.active_subscribers == 2
    assert dashboard.paid_members == 1
    assert dashboard.draft_count == 1


def test_every_admin_model_sits_in_its_group_and_settings_holds_only_settings(editor_client):
    from django.contrib import admin

    page = editor_client.get(reverse("admin:index"))
    placed = {
        group["name"]: {model["object_name"] for model in group["models"]}
        for group in page.context["app_list"]
    }
    money = {
        "Membership", "Plan", "Offer", "Gift", "GroupInvite", "Donation", "StripeEvent",
    }  # fmt: skip
    assert placed["Money"] == money
    # Every subscriptions model is either audience or money: none is a setting.
    subscriptions = {
        model.__name__ for model in admin.site._registry if model._meta.app_label == "subscriptions"
    }
    assert subscriptions <= placed["Money"] | placed["Audience"]
    # Settings holds the publication and the sign-in accounts, nothing that fell through.
    assert placed["Settings"] == {"Publication", "User", "Group", "EmailAddress", "Authenticator"}
    listed = [name for names in placed.values() for name in names]
    assert len(listed) == len(set(listed)) == len(admin.site._registry)


@given(note=note_texts)
@hypothesis_settings(max_examples=40, deadline=None)
def test_a_note_survives_saving_and_nothing_else_rides_on_it(note):
    from html import escape

    from newsletter.services.content import sanitize_body

    saved = sanitize_body(
        html=f'<p>x<sup data-note="{escape(note)}" onclick="steal()" data-x="1"></sup></p>'
    )
    sup = _parse(saved).find(".//h:sup", NS)
    assert sup.get("data-note") == note
    assert sup.get("onclick") is None and sup.get("data-x") is None
