"""The management commands: seed_demo, ensure_admin, publish_article."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.management import CommandError, call_command
from PIL import Image

from newsletter.models import Article, Author, EmailSend, Section, TelegramPost
from newsletter.services.content import has_paywall
from publication.models import Publication
from tests.factories import ArticleFactory, PublishedArticleFactory, SubscriberFactory

pytestmark = pytest.mark.django_db


def _run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_seed_demo_creates_a_whole_publication_and_sends_nothing(settings):
    SubscriberFactory()  # someone who would get an email if seeding published for real
    _run("seed_demo")

    publication = Publication.load()
    assert publication.name == "The Meridian Letter"
    assert publication.kofi_url and publication.buymeacoffee_url
    assert publication.telegram_channel_url
    assert Author.objects.count() == 2
    assert Section.objects.count() == 3

    articles = Article.objects.all()
    assert len(articles) >= 8
    statuses = {article.status for article in articles}
    assert statuses == {"published", "scheduled", "draft"}
    paid = articles.filter(visibility="paid", status="published")
    assert paid.exists()
    assert all(has_paywall(html=article.body) for article in paid)
    for article in articles:
        assert article.authors.exists()
        with Image.open(article.cover_image.path) as cover:
            assert cover.size == (1600, 900)

    assert not EmailSend.objects.exists()
    assert not TelegramPost.objects.exists()
    assert mail.outbox == []


def test_seed_demo_run_twice_changes_nothing():
    _run("seed_demo")
    before = list(Article.objects.order_by("pk").values("pk", "slug", "body", "cover_image"))
    output = _run("seed_demo")
    after = list(Article.objects.order_by("pk").values("pk", "slug", "body", "cover_image"))
    assert before == after
    assert "0 article(s) created" in output
    assert Author.objects.count() == 2
    assert Section.objects.count() == 3


def test_the_demo_site_serves_its_articles(client):
    _run("seed_demo")
    assert "Why Sanctions Leak" in client.get("/").content.decode()
    assert client.get("/p/why-sanctions-leak/").status_code == 200
    assert client.get("/p/notes-on-arctic-shipping/").status_code == 404
    assert client.get("/p/reading-the-budget-season/").status_code == 404


def test_ensure_admin_creates_one_admin_and_prints_working_credentials(client, settings, tmp_path):
    settings.VAR_DIR = tmp_path
    settings.DEBUG = True  # as `make run` has it
    output = _run("ensure_admin")
    lines = dict(
        line.strip().split(": ", 1) for line in output.splitlines() if line.startswith("  ")
    )
    assert lines["username"] == "admin"
    assert client.login(username="admin", password=lines["password"])
    assert get_user_model().objects.get(username="admin").is_superuser

    again = _run("ensure_admin")
    assert get_user_model().objects.filter(is_superuser=True).count() == 1
    assert f"password: {lines['password']}" in again  # shown again, not replaced


def test_ensure_admin_in_production_shows_the_password_once_and_keeps_it_nowhere(
    client, settings, tmp_path
):
    settings.VAR_DIR = tmp_path
    settings.DEBUG = False
    output = _run("ensure_admin", "--email", "Chief@Example.org")
    password = next(
        line.split(": ", 1)[1] for line in output.splitlines() if line.startswith("  password: ")
    )
    assert client.login(username="admin", password=password)
    assert "shown once and kept nowhere" in output
    assert list(tmp_path.iterdir()) == []
    again = _run("ensure_admin")
    assert password not in again
    assert "already exists (admin)" in again


def test_ensure_admin_leaves_an_existing_admin_alone(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    get_user_model().objects.create_superuser("chief", "chief@example.com", "their-own-pass")
    output = _run("ensure_admin")
    assert "already exists (chief)" in output
    assert "password:" not in output
    assert get_user_model().objects.count() == 1


def test_publish_article_command_publishes_once():
    article = ArticleFactory(slug="ready")
    assert "Published" in _run("publish_article", "ready")
    article.refresh_from_db()
    assert article.status == Article.Status.PUBLISHED
    first = article.published_at
    assert "already published" in _run("publish_article", "ready")
    article.refresh_from_db()
    assert article.published_at == first


def test_publish_article_command_can_skip_email():
    article = ArticleFactory(slug="quiet")
    _run("publish_article", "quiet", "--no-email")
    article.refresh_from_db()
    assert article.status == Article.Status.PUBLISHED
    assert article.email_audience == Article.EmailAudience.NOBODY


def test_publish_article_command_explains_an_unknown_slug():
    PublishedArticleFactory(slug="exists")
    with pytest.raises(CommandError, match="No article with the slug 'missing'"):
        _run("publish_article", "missing")


def test_publish_article_command_reports_the_email_send():
    SubscriberFactory()
    ArticleFactory(slug="to-everyone")
    assert "Email send queued for 1 reader." in _run("publish_article", "to-everyone")
