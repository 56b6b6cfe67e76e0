"""Editors and the Telegram post: status in the admin, repost after failure, update the post."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from newsletter.models import Article, TelegramPost
from newsletter.services import telegram_posting
from newsletter.services.publishing import publish_article
from publication.models import Publication
from tests.factories import ArticleFactory, PublishedArticleFactory, StaffUserFactory

pytestmark = pytest.mark.django_db

CHANNEL = "@broadside"
ARTICLES = reverse("admin:newsletter_article_changelist")


@pytest.fixture
def run_action(editor_client, django_capture_on_commit_callbacks):
    """Run an article admin action; queued tasks run when its transaction commits."""

    def _run(action: str, *articles: Article):
        with django_capture_on_commit_callbacks(execute=True):
            response = editor_client.post(
                ARTICLES,
                {"action": action, ACTION_CHECKBOX_NAME: [a.pk for a in articles]},
                follow=True,
            )
        assert response.status_code == 200
        return [str(m) for m in response.context["messages"]]

    return _run


def published(article: Article, django_capture_on_commit_callbacks) -> TelegramPost:
    with django_capture_on_commit_callbacks(execute=True):
        result = publish_article(article=article, send_email=False)
    assert result.telegram_post is not None
    return TelegramPost.objects.get(pk=result.telegram_post.pk)


# --- Status ----------------------------------------------------------------------------------


def test_the_article_list_links_a_posted_article_to_its_message(telegram_api, editor_client):
    article = PublishedArticleFactory(title="Posted one")
    TelegramPost.objects.create(
        article=article, chat_id=CHANNEL, status="sent", message_id=4321, kind="text"
    )

    page = editor_client.get(ARTICLES).content.decode()

    assert 'href="https://t.me/broadside/4321"' in page
    assert "Posted ↗" in page


def test_the_article_list_shows_a_failure_with_its_error_text(telegram_api, editor_client):
    article = PublishedArticleFactory()
    TelegramPost.objects.create(
        article=article,
        chat_id=CHANNEL,
        status="failed",
        last_error="sendMessage: 403 Forbidden: bot was kicked from the channel chat",
    )

    page = editor_client.get(ARTICLES).content.decode()

    assert "Failed: sendMessage: 403 Forbidden: bot was kicked from the channel chat" in page


def test_the_article_page_shows_its_telegram_post(telegram_api, editor_client):
    article = PublishedArticleFactory()
    TelegramPost.objects.create(
        article=article, chat_id=CHANNEL, status="sent", message_id=77, kind="photo"
    )

    page = editor_client.get(
        reverse("admin:newsletter_article_change", args=[article.pk])
    ).content.decode()

    assert 'href="https://t.me/broadside/77"' in page


@pytest.mark.parametrize("chat_id", [CHANNEL, "-1001234567890"])
@pytest.mark.parametrize("page", [ARTICLES, reverse("admin:newsletter_telegrampost_changelist")])
def test_the_lists_need_no_more_queries_for_more_posted_articles(
    telegram_api, settings, editor_client, django_assert_max_num_queries, chat_id, page
):
    # A numeric channel id links through the publication's channel address.
    settings.TELEGRAM_CHAT_ID = chat_id
    publication = Publication.load()
    publication.telegram_channel_url = "https://t.me/broadside_news"
    publication.save()
    for n in range(3):
        TelegramPost.objects.create(
            article=PublishedArticleFactory(), chat_id=chat_id, status="sent", message_id=n + 1
        )
    with django_assert_max_num_queries(100) as few:
        editor_client.get(page)
    for n in range(10):
        TelegramPost.objects.create(
            article=PublishedArticleFactory(), chat_id=chat_id, status="sent", message_id=n + 9
        )
    with django_assert_max_num_queries(len(few.captured_queries)):
        content = editor_client.get(page).content.decode()
    if chat_id == CHANNEL:
        assert 'href="https://t.me/broadside/18"' in content
    else:
        assert 'href="https://t.me/broadside_news/18"' in content


def test_without_a_token_the_admin_says_posting_is_off(settings, editor_client, run_action):
    settings.TELEGRAM_BOT_TOKEN = ""
    article = PublishedArticleFactory()

    assert "Off (no bot token or chat)" in editor_client.get(ARTICLES).content.decode()
    posts_page = editor_client.get(reverse("admin:newsletter_telegrampost_changelist"))
    assert "Telegram posting is off" in posts_page.content.decode()
    messages = run_action("repost_to_telegram", article)
    assert messages == ["Telegram posting is off: set TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID."]
    assert not TelegramPost.objects.exists()


def test_staff_who_may_only_view_articles_cannot_post_to_the_channel(telegram_api, client):
    viewer = StaffUserFactory(is_superuser=False)
    viewer.user_permissions.set(
        Permission.objects.filter(codename__in=["view_article", "view_telegrampost"])
    )
    client.force_login(viewer)
    article = PublishedArticleFactory()

    for action in ("repost_to_telegram", "update_telegram_post"):
        client.post(ARTICLES, {"action": action, ACTION_CHECKBOX_NAME: [article.pk]})

    assert client.get(ARTICLES).status_code == 200
    assert not TelegramPost.objects.exists()
    assert telegram_api.calls() == []


# --- Repost after a failure ----------------------------------------------------------------


def test_repost_after_a_failure_posts_the_article(
    telegram_api, run_action, django_capture_on_commit_callbacks
):
    telegram_api.fail_next("bot_kicked")
    post = published(ArticleFactory(), django_capture_on_commit_callbacks)
    assert post.status == TelegramPost.Status.FAILED

    messages = run_action("repost_to_telegram", post.article)

    assert messages == ["1 article(s) queued for posting to Telegram."]
    post.refresh_from_db()
    assert post.status == TelegramPost.Status.SENT
    assert post.last_error == ""
    assert post.message_id == telegram_api.posts()[0].message_id
    assert len(telegram_api.posts()) == 1


def test_repost_refuses_an_article_already_posted(
    telegram_api, run_action, django_capture_on_commit_callbacks
):
    post = published(ArticleFactory(title="Done"), django_capture_on_commit_callbacks)

    messages = run_action("repost_to_telegram", post.article)

    assert messages == ["“Done” is already posted; use “update the post” to change it."]
    assert len(telegram_api.calls()) == 1


def test_repost_posts_an_article_published_while_telegram_was_off(
    telegram_api, settings, run_action, django_capture_on_commit_callbacks
):
    settings.TELEGRAM_BOT_TOKEN = ""
    with django_capture_on_commit_callbacks(execute=True):
        article = publish_article(article=ArticleFactory(), send_email=False).article
    settings.TELEGRAM_BOT_TOKEN = telegram_api.token

    run_action("repost_to_telegram", article)

    post = TelegramPost.objects.get(article=article)
    assert post.status == TelegramPost.Status.SENT
    assert len(telegram_api.posts()) == 1


def test_repost_refuses_a_draft(telegram_api, run_action):
    article = ArticleFactory(title="Not yet")

    assert run_action("repost_to_telegram", article) == ["“Not yet” is not published."]
    assert not TelegramPost.objects.exists()


def test_a_queued_post_can_be_reposted_only_once_it_has_waited_too_long(telegram_api, run_action):
    article = PublishedArticleFactory(title="Waiting")
    post = TelegramPost.objects.create(article=article, chat_id=CHANNEL)

    assert run_action("repost_to_telegram", article) == ["“Waiting” is already on its way."]
    long_ago = timezone.now() - telegram_posting.STALE_CLAIM_AFTER - timedelta(seconds=1)
    TelegramPost.objects.filter(pk=post.pk).update(updated_at=long_ago)
    run_action("repost_to_telegram", article)

    post.refresh_from_db()
    assert post.status == TelegramPost.Status.SENT
    assert len(telegram_api.posts()) == 1


def test_a_stuck_post_can_be_reposted_only_once_its_claim_is_stale(telegram_api, run_action):
    article = PublishedArticleFactory(title="Stuck")
    post = TelegramPost.objects.create(
        article=article, chat_id=CHANNEL, status="sending", claimed_at=timezone.now()
    )

    assert run_action("repost_to_telegram", article) == ["“Stuck” is already on its way."]
    assert telegram_api.calls() == []

    post.claimed_at = timezone.now() - telegram_posting.STALE_CLAIM_AFTER - timedelta(seconds=1)
    post.save()
    assert telegram_posting.is_stuck(telegram_post=post)
    run_action("repost_to_telegram", article)

    post.refresh_from_db()
    assert post.status == TelegramPost.Status.SENT
    assert len(telegram_api.posts()) == 1


# --- Update the post ----------------------------------------------------------------------


def test_update_edits_the_text_after_the_title_changed(
    telegram_api, run_action, django_capture_on_commit_callbacks
):
    post = published(ArticleFactory(title="First title"), django_capture_on_commit_callbacks)
    Article.objects.filter(pk=post.article_id).update(title="Better & clearer title")

    messages = run_action("update_telegram_post", post.article)

    assert messages == ["1 Telegram post(s) queued for updating."]
    (call,) = telegram_api.calls("editMessageText")
    assert call.params["message_id"] == post.message_id
    assert call.params["parse_mode"] == "HTML"
    (message,) = telegram_api.posts()
    assert message.text.startswith("Better & clearer title\n\n")
    post.refresh_from_db()
    assert post.edited_at is not None
    assert post.last_error == ""


def test_update_edits_the_caption_of_a_photo_post(
    telegram_api, run_action, django_capture_on_commit_callbacks
):
    from tests.newsletter.test_telegram import article_with_cover

    post = published(article_with_cover(subtitle="Old teaser"), django_capture_on_commit_callbacks)
    Article.objects.filter(pk=post.article_id).update(subtitle="New teaser")

    run_action("update_telegram_post", post.article)

    (call,) = telegram_api.calls("editMessageCaption")
    assert "<i>New teaser</i>" in call.params["caption"]
    assert "New teaser" in telegram_api.posts()[0].text
    assert telegram_api.calls("editMessageText") == []


def test_update_with_nothing_changed_is_not_an_error(
    telegram_api, run_action, django_capture_on_commit_callbacks
):
    post = published(ArticleFactory(), django_capture_on_commit_callbacks)

    run_action("update_telegram_post", post.article)

    assert [call.answered for call in telegram_api.calls("editMessageText")] == [400]
    post.refresh_from_db()
    assert post.last_error == ""
    assert post.edited_at is not None


def test_a_failed_update_is_recorded_and_the_post_stays_posted(
    telegram_api, run_action, django_capture_on_commit_callbacks
):
    post = published(ArticleFactory(title="A"), django_capture_on_commit_callbacks)
    Article.objects.filter(pk=post.article_id).update(title="B")
    telegram_api.fail_next("bot_kicked")

    run_action("update_telegram_post", post.article)

    post.refresh_from_db()
    assert post.status == TelegramPost.Status.SENT
    assert post.last_error == (
        "Update failed: editMessageText: 403 Forbidden: bot was kicked from the channel chat"
    )


def test_update_refuses_an_article_never_posted(telegram_api, run_action):
    article = PublishedArticleFactory(title="Unposted")

    messages = run_action("update_telegram_post", article)

    assert messages == ["“Unposted” has no Telegram post to update."]
    assert telegram_api.calls() == []


# --- Links to the message ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chat_id", "channel_url", "expected"),
    [
        ("@broadside", "", "https://t.me/broadside/5"),
        ("-1001234567890", "https://t.me/broadside_news", "https://t.me/broadside_news/5"),
        ("-1001234567890", "https://t.me/+AbCdEfGh", "https://t.me/c/1234567890/5"),
        ("-1001234567890", "", "https://t.me/c/1234567890/5"),
        ("123456789", "", ""),
    ],
)
def test_the_link_to_a_message_follows_the_channel_address(chat_id, channel_url, expected):
    publication = Publication.load()
    publication.telegram_channel_url = channel_url
    publication.save()
    post = TelegramPost(article=PublishedArticleFactory(), chat_id=chat_id, message_id=5)

    assert telegram_posting.telegram_message_url(telegram_post=post) == expected


def test_the_telegram_posts_list_shows_errors_and_reposts_from_there(
    telegram_api, editor_client, django_capture_on_commit_callbacks
):
    article = PublishedArticleFactory(title="From the posts list")
    post = TelegramPost.objects.create(
        article=article, chat_id=CHANNEL, status="failed", last_error="sendMessage: 502 Bad Gateway"
    )
    posts_list = reverse("admin:newsletter_telegrampost_changelist")

    page = editor_client.get(posts_list).content.decode()
    assert "Failed: sendMessage: 502 Bad Gateway" in page
    assert "Telegram posting is off" not in page

    with django_capture_on_commit_callbacks(execute=True):
        editor_client.post(posts_list, {"action": "repost", ACTION_CHECKBOX_NAME: [post.pk]})

    post.refresh_from_db()
    assert post.status == TelegramPost.Status.SENT
    assert telegram_api.posts()[0].text.startswith("From the posts list")
