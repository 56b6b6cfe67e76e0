"""The editor's admin: write with the editor, preview, publish and schedule."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from newsletter.forms import ArticleAdminForm
from newsletter.models import Article
from newsletter.services.publishing import publish_article
from publication.models import Publication
from tests.factories import (
    ArticleFactory,
    AuthorFactory,
    SectionFactory,
    StaffUserFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-editor-password-42"


def _inline_management_data(page) -> dict[str, str]:
    """The management forms of whatever inlines the article page has, as the browser sends."""
    data = {}
    for inline in page.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in management.fields:
            data[f"{management.prefix}-{name}"] = management[name].value()
    return data


def _add_form_data(**overrides):
    data = {
        "title": "Why the strait matters",
        "slug": "why-the-strait-matters",
        "subtitle": "Shipping, insurance and the coming winter",
        "body": (
            "<p>Free analysis for everyone.</p>"
            '<hr class="paywall">'
            '<p onclick="steal()">Paid scenarios.</p><script>alert(1)</script>'
        ),
        "cover_caption": "",
        "publish_at": "",
        "visibility": "paid",
        "section": "",
        "email_subject": "",
        "email_audience": "everyone",
        "post_to_telegram": "on",
        "comments_enabled": "on",
        "external_id": "",
    }
    data.update(overrides)
    return data


def test_an_editor_writes_previews_and_publishes_an_article(client):
    editor = StaffUserFactory(username="editor")
    editor.set_password(PASSWORD)
    editor.save()
    editor_client = Client()
    login = editor_client.post(
        reverse("admin:login"), {"username": "editor", "password": PASSWORD, "next": "/admin/"}
    )
    assert login.status_code == 302
    assert login["Location"] == "/admin/"

    add_url = reverse("admin:newsletter_article_add")
    page = editor_client.get(add_url)
    assert page.status_code == 200
    html = page.content.decode()
    # The rich-text editor, with the paywall button's module, is on the form.
    assert "data-django-prose-editor-configurable" in html
    assert "newsletter/prose/paywall.js" in html

    section = SectionFactory()
    author = AuthorFactory()
    response = editor_client.post(
        add_url,
        {
            **_add_form_data(section=section.pk, authors=[author.pk]),
            **_inline_management_data(page),
        },
        follow=True,
    )
    assert response.status_code == 200
    article = Article.objects.get(slug="why-the-strait-matters")
    assert article.status == Article.Status.DRAFT
    assert article.published_at is None
    assert list(article.authors.all()) == [author]
    # Sanitised on the way in, the paywall marker kept in its one spelling.
    assert "<script" not in article.body
    assert "onclick" not in article.body
    assert '<hr class="paywall">' in article.body

    # Readers cannot see a draft; the editor can preview it both ways.
    assert client.get("/p/why-the-strait-matters/").status_code == 404
    preview_url = reverse("admin:newsletter_article_preview", args=[article.pk])
    free_view = editor_client.get(preview_url, {"as": "free"}).content.decode()
    assert "Free analysis for everyone." in free_view
    assert "Paid scenarios." not in free_view
    assert 'id="paywall"' in free_view
    paid_view = editor_client.get(preview_url, {"as": "paid"}).content.decode()
    assert "Paid scenarios." in paid_view
    assert 'id="paywall"' not in paid_view

    publish_url = reverse("admin:newsletter_article_publish", args=[article.pk])
    # GET is the confirmation, which changes nothing; only its POST publishes.
    confirmation = editor_client.get(publish_url).content.decode()
    assert "Email nobody; no Telegram post" in confirmation
    article.refresh_from_db()
    assert article.status == Article.Status.DRAFT
    response = editor_client.post(publish_url, follow=True)
    assert "Published." in response.content.decode()
    article.refresh_from_db()
    assert article.status == Article.Status.PUBLISHED
    assert article.published_at is not None
    assert client.get("/p/why-the-strait-matters/").status_code == 200


def test_the_change_form_offers_preview_publish_and_schedule_for_a_draft(editor_client):
    article = ArticleFactory()
    html = editor_client.get(
        reverse("admin:newsletter_article_change", args=[article.pk])
    ).content.decode()
    assert reverse("admin:newsletter_article_preview", args=[article.pk]) in html
    assert 'name="_publish"' in html
    assert 'name="_schedule"' in html
    assert 'name="_test_email"' in html


def test_an_editor_schedules_an_article_from_its_page(editor_client):
    article = ArticleFactory()
    when = (timezone.now() + timedelta(days=1)).replace(second=0, microsecond=0)
    article.publish_at = when
    article.save()
    editor_client.post(reverse("admin:newsletter_article_schedule", args=[article.pk]))
    article.refresh_from_db()
    assert article.status == Article.Status.SCHEDULED
    assert article.publish_at == when


def test_scheduling_in_the_past_is_refused_with_a_message(editor_client):
    article = ArticleFactory()
    article.publish_at = timezone.now() - timedelta(hours=1)
    article.save()
    response = editor_client.post(
        reverse("admin:newsletter_article_schedule", args=[article.pk]), follow=True
    )
    assert "Pick a time in the future" in response.content.decode()
    article.refresh_from_db()
    assert article.status == Article.Status.DRAFT


def test_list_actions_publish_schedule_and_unschedule(editor_client):
    changelist = reverse("admin:newsletter_article_changelist")
    to_publish = ArticleFactory()
    to_schedule = ArticleFactory(publish_at=timezone.now() + timedelta(hours=3))
    editor_client.post(changelist, {"action": "publish_now", "_selected_action": [to_publish.pk]})
    editor_client.post(
        changelist, {"action": "schedule_selected", "_selected_action": [to_schedule.pk]}
    )
    to_publish.refresh_from_db()
    to_schedule.refresh_from_db()
    assert to_publish.status == Article.Status.PUBLISHED
    assert to_schedule.status == Article.Status.SCHEDULED

    editor_client.post(
        changelist, {"action": "unschedule_selected", "_selected_action": [to_schedule.pk]}
    )
    to_schedule.refresh_from_db()
    assert to_schedule.status == Article.Status.DRAFT


def test_the_article_list_filters_by_status_and_searches(editor_client):
    ArticleFactory(title="Draft about grain corridors")
    ArticleFactory(title="Published about ports", status="published", published_at=timezone.now())
    changelist = reverse("admin:newsletter_article_changelist")
    html = editor_client.get(changelist, {"status__exact": "draft"}).content.decode()
    assert "Draft about grain corridors" in html
    assert "Published about ports" not in html
    html = editor_client.get(changelist, {"q": "ports"}).content.decode()
    assert "Published about ports" in html
    assert "Draft about grain corridors" not in html


def test_a_second_paywall_marker_is_refused(editor_client):
    body = '<p>a</p><hr class="paywall"><p>b</p><hr class="paywall"><p>c</p>'
    add_url = reverse("admin:newsletter_article_add")
    response = editor_client.post(
        add_url,
        {**_add_form_data(body=body), **_inline_management_data(editor_client.get(add_url))},
    )
    assert response.status_code == 200
    assert "only one paywall marker" in response.content.decode()
    assert not Article.objects.exists()


def test_the_status_cannot_be_set_through_the_form(editor_client):
    article = ArticleFactory(slug="stays-a-draft")
    change_url = reverse("admin:newsletter_article_change", args=[article.pk])
    response = editor_client.post(
        change_url,
        {
            **_add_form_data(slug="stays-a-draft", status="published", published_at="2020-01-01"),
            **_inline_management_data(editor_client.get(change_url)),
        },
    )
    assert response.status_code == 302  # saved: the other fields were accepted
    article.refresh_from_db()
    assert article.status == Article.Status.DRAFT
    assert article.published_at is None


def test_the_publication_is_edited_as_one_page(editor_client):
    response = editor_client.get(reverse("admin:publication_publication_changelist"))
    publication = Publication.load()
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "admin:publication_publication_change", args=[publication.pk]
    )
    assert editor_client.get(reverse("admin:publication_publication_add")).status_code == 403


@pytest.mark.parametrize("signed_in", [False, True])
def test_readers_cannot_reach_the_preview(client, signed_in):
    article = ArticleFactory(body='<p>Free.</p><hr class="paywall"><p>Paid scenarios.</p>')
    if signed_in:
        client.force_login(UserFactory())
    url = reverse("admin:newsletter_article_preview", args=[article.pk])
    response = client.get(url, {"as": "paid"})
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    assert "Paid scenarios." not in response.content.decode()


def test_view_on_site_opens_the_preview_until_the_article_is_published(editor_client):
    draft = ArticleFactory(slug="draft-one")
    html = editor_client.get(
        reverse("admin:newsletter_article_change", args=[draft.pk])
    ).content.decode()
    assert f"/admin/newsletter/article/{draft.pk}/preview/?as=paid" in html
    published = ArticleFactory(slug="out-one", status="published", published_at=timezone.now())
    html = editor_client.get(
        reverse("admin:newsletter_article_change", args=[published.pk])
    ).content.decode()
    assert 'name="_publish"' not in html


def test_moving_a_scheduled_article_into_the_past_is_refused(editor_client):
    later = timezone.now() + timedelta(hours=5)
    article = ArticleFactory(slug="later-on", status="scheduled", publish_at=later)
    change_url = reverse("admin:newsletter_article_change", args=[article.pk])
    response = editor_client.post(
        change_url,
        {
            **_add_form_data(slug="later-on", publish_at_0="2020-01-01", publish_at_1="10:00"),
            **_inline_management_data(editor_client.get(change_url)),
        },
    )
    assert response.status_code == 200
    assert "Pick a time in the future" in response.content.decode()
    article.refresh_from_db()
    assert article.publish_at == later


def test_staff_allowed_only_to_view_articles_cannot_publish_schedule_or_unschedule(client):
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_article"))
    client.force_login(viewer)
    draft = ArticleFactory(publish_at=timezone.now() + timedelta(hours=3))
    scheduled = ArticleFactory(status="scheduled", publish_at=timezone.now() + timedelta(hours=3))
    changelist = reverse("admin:newsletter_article_changelist")
    assert client.get(changelist).status_code == 200  # they may look

    for action, article in (
        ("publish_now", draft),
        ("schedule_selected", draft),
        ("unschedule_selected", scheduled),
    ):
        client.post(changelist, {"action": action, "_selected_action": [article.pk]})
    publish = client.post(reverse("admin:newsletter_article_publish", args=[draft.pk]))
    schedule = client.post(reverse("admin:newsletter_article_schedule", args=[draft.pk]))

    assert publish.status_code == 403
    assert schedule.status_code == 403
    draft.refresh_from_db()
    scheduled.refresh_from_db()
    assert draft.status == Article.Status.DRAFT
    assert scheduled.status == Article.Status.SCHEDULED


def test_saving_the_article_page_does_not_undo_a_publish_that_lands_meanwhile(
    editor_client, monkeypatch
):
    article = ArticleFactory(slug="racing")
    change_url = reverse("admin:newsletter_article_change", args=[article.pk])
    data = {
        **_add_form_data(slug="racing", title="Edited title"),
        **_inline_management_data(editor_client.get(change_url)),
    }
    validate = ArticleAdminForm.clean

    def validate_while_the_scheduler_publishes(form):
        publish_article(article=Article.objects.get(pk=article.pk))
        return validate(form)

    monkeypatch.setattr(ArticleAdminForm, "clean", validate_while_the_scheduler_publishes)
    assert editor_client.post(change_url, data).status_code == 302

    article.refresh_from_db()
    assert article.title == "Edited title"
    assert article.status == Article.Status.PUBLISHED
    assert article.published_at is not None


def _publication_form(editor_client, **changes):
    url = reverse("admin:publication_publication_change", args=[Publication.load().pk])
    data = {
        "name": "The Meridian Letter, Lisbon",
        "tagline": "",
        "description": "",
        "footer_text": "",
        "sender_name": "",
        "sender_email": "letters@meridian.example",
        "reply_to_email": "",
        "kofi_url": "",
        "buymeacoffee_url": "",
        "telegram_channel_url": "",
        "comment_policy": Publication.CommentPolicy.SIGNED_IN,
        **changes,
    }
    return url, editor_client.post(url, data)


def test_the_publication_page_previews_the_from_line_quoted_by_the_email_library(editor_client):
    url, response = _publication_form(
        editor_client, sender_name="The Meridian Letter, Lisbon", kofi_url="ko-fi.com/meridian"
    )
    assert response.status_code == 302
    assert Publication.load().kofi_url == "https://ko-fi.com/meridian"

    page = editor_client.get(url).content.decode()

    assert "From line" in page
    assert "&quot;The Meridian Letter, Lisbon&quot; &lt;letters@meridian.example&gt;" in page


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("sender_email", "Letters <letters@meridian.example>", "valid email address"),
        ("sender_email", "zoë@meridian.example", "valid email address"),
        ("reply_to_email", "a@b@c", "valid email address"),
        ("sender_name", "Bell\x07", "control characters"),
        ("name", "Two\u2028lines", "control characters"),
    ],
)
def test_sender_fields_that_make_no_valid_from_line_are_refused(editor_client, field, value, error):
    _, response = _publication_form(editor_client, **{field: value})

    assert response.status_code == 200
    assert error in response.content.decode()
    assert Publication.load().sender_email == ""


def test_a_sender_address_with_an_internationalised_domain_is_saved_and_sent_in_idna(
    editor_client,
):
    from config.mail import parse_mailbox
    from publication.emails import sender_address

    url, response = _publication_form(editor_client, sender_email="letters@Bücher.example")

    assert response.status_code == 302
    publication = Publication.load()
    assert parse_mailbox(sender_address(publication)).addr_spec == ("letters@xn--bcher-kva.example")
    page = editor_client.get(url).content.decode()
    assert "letters@xn--bcher-kva.example" in page
