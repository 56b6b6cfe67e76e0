"""Posting published articles to the Telegram channel, against a local Bot API stand-in."""

from __future__ import annotations

import io
import threading
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.utils import timezone
from PIL import Image

from config.celery import app as celery_app
from newsletter import telegram
from newsletter.models import Article, TelegramPost
from newsletter.services import telegram_posting
from newsletter.services.publishing import publish_article
from newsletter.services.telegram_posting import (
    RetryLater,
    render_telegram_post,
    send_telegram_post,
    truncate_at_word,
    visible_length,
)
from newsletter.tasks import post_article_to_telegram, requeue_stalled_telegram_posts
from tests.factories import ArticleFactory, PublishedArticleFactory
from tests.fakes.telegram_api import parse_html, utf16_length

pytestmark = pytest.mark.django_db

CHANNEL = "@broadside"


@pytest.fixture
def publish(django_capture_on_commit_callbacks):
    """Publish as the admin does: the Telegram task runs when the transaction commits.

    Without email, so that these tests are about Telegram alone.
    """

    def _publish(article: Article) -> TelegramPost | None:
        with django_capture_on_commit_callbacks(execute=True):
            result = publish_article(article=article, send_email=False)
        if result.telegram_post is None:
            return None
        return TelegramPost.objects.get(pk=result.telegram_post.pk)

    return _publish


@pytest.fixture
def eager_retries():
    """Let eager tasks retry at once, as a worker would after the countdown.

    With task_eager_propagates, Celery raises the Retry instead of running the task again.
    """
    celery_app.conf.task_eager_propagates = False
    yield
    celery_app.conf.task_eager_propagates = True


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), "navy").save(buffer, format="PNG")
    return buffer.getvalue()


def article_with_cover(**fields) -> Article:
    return ArticleFactory(
        cover_image=SimpleUploadedFile("cover.png", png_bytes(), content_type="image/png"),
        **fields,
    )


# --- What is posted ------------------------------------------------------------------------


def test_an_article_without_a_cover_is_posted_as_one_html_text_message(telegram_api, publish):
    article = ArticleFactory(
        title="Sanctions, a year on",
        subtitle="What changed",
        body="<p>The opening paragraph.</p><p>The second one.</p>",
    )

    post = publish(article)

    (call,) = telegram_api.calls()
    assert call.method == "sendMessage"
    assert call.params["chat_id"] == CHANNEL
    assert call.params["parse_mode"] == "HTML"
    text = call.params["text"]
    assert text.startswith("<b>Sanctions, a year on</b>\n\n<i>What changed</i>\n\n")
    assert "The opening paragraph.\n\nThe second one." in text
    assert text.endswith(f'<a href="http://testserver/p/{article.slug}/">Read the full article</a>')
    (message,) = telegram_api.posts(CHANNEL)
    assert message.text.startswith("Sanctions, a year on\n\nWhat changed\n\nThe opening")
    assert [e.type for e in message.entities] == ["bold", "italic", "text_link"]
    assert post.status == TelegramPost.Status.SENT
    assert post.message_id == message.message_id
    assert post.kind == TelegramPost.Kind.TEXT
    assert post.attempts == 1


def test_a_cover_is_uploaded_with_the_caption_when_the_site_is_not_public(telegram_api, publish):
    article = article_with_cover(title="With a cover")

    post = publish(article)

    (call,) = telegram_api.calls()
    assert call.method == "sendPhoto"
    assert call.content_type.startswith("multipart/form-data")
    assert call.files["photo"].content == png_bytes()
    assert call.files["photo"].filename.endswith(".png")
    assert call.params["parse_mode"] == "HTML"
    assert call.params["caption"].startswith("<b>With a cover</b>")
    assert "text" not in call.params
    assert post.kind == TelegramPost.Kind.PHOTO
    assert telegram_api.posts()[0].kind == "photo"


def test_a_cover_on_a_public_site_is_sent_as_its_absolute_url(telegram_api, publish, settings):
    settings.SITE_URL = "https://news.example.com"
    article = article_with_cover()

    publish(article)

    (call,) = telegram_api.calls("sendPhoto")
    assert call.content_type.startswith("application/json")
    assert call.params["photo"] == f"https://news.example.com{article.cover_image.url}"
    assert call.files == {}
    assert f'href="https://news.example.com/p/{article.slug}/"' in call.params["caption"]


def test_a_photo_telegram_cannot_fetch_falls_back_to_a_text_post(telegram_api, publish):
    telegram_api.fail_next("bad_photo", method="sendPhoto")
    article = article_with_cover(title="Cover gone wrong")

    post = publish(article)

    assert [call.method for call in telegram_api.calls()] == ["sendPhoto", "sendMessage"]
    assert len(telegram_api.posts()) == 1
    assert post.status == TelegramPost.Status.SENT
    assert post.kind == TelegramPost.Kind.TEXT


def test_every_piece_of_text_is_html_escaped(telegram_api, publish):
    article = ArticleFactory(
        title="Tom & Jerry <script>alert(1)</script>",
        subtitle="He said \"no\" & she said 'yes'",
        body="<p>Profits &lt; costs &amp; more &gt; less, &quot;quoted&quot;</p>",
    )

    publish(article)

    (call,) = telegram_api.calls("sendMessage")
    text = call.params["text"]
    assert "<b>Tom &amp; Jerry &lt;script&gt;alert(1)&lt;/script&gt;</b>" in text
    assert "<i>He said &quot;no&quot; &amp; she said &#x27;yes&#x27;</i>" in text
    assert "Profits &lt; costs &amp; more &gt; less, &quot;quoted&quot;" in text
    assert "<script>" not in text
    (message,) = telegram_api.posts()
    assert message.text.splitlines()[0] == "Tom & Jerry <script>alert(1)</script>"
    assert "He said \"no\" & she said 'yes'" in message.text
    assert 'Profits < costs & more > less, "quoted"' in message.text


def test_a_long_caption_is_cut_at_a_word_boundary_with_an_ellipsis(telegram_api, publish):
    words = [f"word{n}" for n in range(400)]
    article = article_with_cover(
        title="A long read", subtitle="", body=f"<p>{' '.join(words)}</p><p>Never shown.</p>"
    )

    publish(article)

    (message,) = telegram_api.posts()
    assert utf16_length(message.text) <= telegram.CAPTION_LIMIT
    title, excerpt, link = message.text.split("\n\n")
    assert title == "A long read"
    assert link == "Read the full article"
    assert excerpt.endswith("\u2026")
    kept = excerpt.removesuffix("\u2026").split(" ")
    assert kept == words[: len(kept)]  # whole words only, in order
    assert len(kept) > 10


def test_a_caption_full_of_entities_and_emoji_is_never_cut_inside_one(telegram_api, publish):
    article = article_with_cover(
        title="R&D <notes>",
        subtitle="Q&A " * 100,
        body="<p>" + "AT&amp;T \U0001f30d &lt;3 " * 300 + "</p>",
    )

    post = publish(article)

    (call,) = telegram_api.calls("sendPhoto")
    visible, _entities = parse_html(call.params["caption"])  # the stand-in parses strictly
    assert utf16_length(visible) <= telegram.CAPTION_LIMIT
    assert visible.startswith("R&D <notes>\n\nQ&A Q&A")
    assert post.status == TelegramPost.Status.SENT


def test_a_long_text_post_stays_within_4096_characters():
    article = ArticleFactory.build(
        title="T " * 150, subtitle="S " * 250, body="<p>" + "body " * 3000 + "</p>"
    )

    text = render_telegram_post(article=article, limit=telegram.MESSAGE_LIMIT)

    visible, _entities = parse_html(text)
    assert utf16_length(visible) <= telegram.MESSAGE_LIMIT
    # The excerpt is a teaser, not the article.
    assert visible.count("body") <= telegram_posting.EXCERPT_LENGTH // 5


def test_a_paid_article_posts_only_its_free_part_and_subscribe_to_read(telegram_api, publish):
    article = ArticleFactory(
        title="Inside the talks",
        visibility=Article.Visibility.PAID,
        body=(
            "<p>What everyone can read.</p>"
            '<hr class="paywall">'
            "<p>PAID-ONLY the details that only subscribers get.</p>"
        ),
    )

    publish(article)

    (call,) = telegram_api.calls("sendMessage")
    assert "PAID-ONLY" not in str(call.params)
    (message,) = telegram_api.posts()
    assert "What everyone can read." in message.text
    assert message.text.endswith("Subscribe to read")
    assert message.entities[-1].url == f"http://testserver/p/{article.slug}/"


def test_a_paid_article_without_a_paywall_marker_posts_no_body_at_all(telegram_api, publish):
    article = ArticleFactory(
        title="All paid",
        subtitle="The teaser editors wrote",
        visibility=Article.Visibility.PAID,
        body="<p>PAID-ONLY every word of it.</p>",
    )

    publish(article)

    (message,) = telegram_api.posts()
    assert "PAID-ONLY" not in message.html
    assert message.text == "All paid\n\nThe teaser editors wrote\n\nSubscribe to read"


def test_a_paid_photo_post_has_no_paid_text_either(telegram_api, publish):
    article = article_with_cover(
        visibility=Article.Visibility.PAID,
        body='<p>Free.</p><hr class="paywall"><p>PAID-ONLY secret</p>',
    )

    publish(article)

    (call,) = telegram_api.calls("sendPhoto")
    assert "PAID-ONLY" not in call.params["caption"]
    assert "Subscribe to read" in call.params["caption"]


def test_figures_and_captions_are_left_out_of_the_opening_lines():
    article = ArticleFactory.build(
        subtitle="",
        body=(
            '<figure><img src="/m.png" alt="Map"><figcaption>Map caption</figcaption></figure>'
            "<h2>First heading</h2><p>First line<br>second line</p>"
        ),
    )

    text = render_telegram_post(article=article, limit=telegram.MESSAGE_LIMIT)

    assert "Map caption" not in text
    assert "First heading\n\nFirst line\nsecond line" in text


# --- Once ----------------------------------------------------------------------------------


def test_delivering_the_task_twice_posts_exactly_once(telegram_api, publish):
    post = publish(ArticleFactory())

    post_article_to_telegram.delay(post.pk)
    post_article_to_telegram.apply(args=[post.pk])

    assert len(telegram_api.calls("sendMessage")) == 1
    assert len(telegram_api.posts()) == 1
    post.refresh_from_db()
    assert post.attempts == 1
    assert post.status == TelegramPost.Status.SENT


def test_publishing_twice_creates_one_post(telegram_api, publish):
    article = ArticleFactory()
    publish(article)
    assert publish(Article.objects.get(pk=article.pk)) is None

    assert TelegramPost.objects.filter(article=article).count() == 1
    assert len(telegram_api.posts()) == 1


def test_a_post_claimed_by_a_worker_that_died_is_not_sent_again(telegram_api):
    """Crash between Telegram's answer and saving the message id: never post twice."""
    article = PublishedArticleFactory()
    post = TelegramPost.objects.create(
        article=article, chat_id=CHANNEL, status=TelegramPost.Status.SENDING, attempts=1
    )

    assert send_telegram_post(telegram_post_id=post.pk) is None
    post_article_to_telegram.delay(post.pk)

    assert telegram_api.calls() == []
    post.refresh_from_db()
    assert post.status == TelegramPost.Status.SENDING


def test_a_sent_post_is_never_sent_again_even_if_its_status_was_reset(telegram_api):
    article = PublishedArticleFactory()
    post = TelegramPost.objects.create(
        article=article, chat_id=CHANNEL, status=TelegramPost.Status.PENDING, message_id=77
    )

    assert send_telegram_post(telegram_post_id=post.pk) is None
    assert telegram_api.calls() == []


def test_a_post_whose_task_was_lost_is_queued_again_and_posted_once(
    telegram_api, django_capture_on_commit_callbacks
):
    lost = TelegramPost.objects.create(article=PublishedArticleFactory(), chat_id=CHANNEL)
    waiting = TelegramPost.objects.create(article=PublishedArticleFactory(), chat_id=CHANNEL)
    stuck = TelegramPost.objects.create(
        article=PublishedArticleFactory(), chat_id=CHANNEL, status="sending"
    )
    long_ago = timezone.now() - telegram_posting.STALE_CLAIM_AFTER - timedelta(minutes=1)
    TelegramPost.objects.filter(pk__in=[lost.pk, stuck.pk]).update(updated_at=long_ago)

    with django_capture_on_commit_callbacks(execute=True):
        assert requeue_stalled_telegram_posts() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert requeue_stalled_telegram_posts() == 0  # not again until it is stale again

    lost.refresh_from_db()
    assert lost.status == TelegramPost.Status.SENT
    assert len(telegram_api.posts()) == 1
    waiting.refresh_from_db()
    stuck.refresh_from_db()
    assert (waiting.status, stuck.status) == ("pending", "sending")


def test_a_post_waiting_out_a_long_retry_after_is_not_queued_again_before_it_is_due(
    telegram_api, django_capture_on_commit_callbacks
):
    post = TelegramPost.objects.create(article=PublishedArticleFactory(), chat_id=CHANNEL)
    telegram_api.fail_next("retry_after", retry_after=1800)
    with pytest.raises(RetryLater):
        send_telegram_post(telegram_post_id=post.pk)
    post.refresh_from_db()
    assert not telegram_posting.is_stuck(telegram_post=post)

    with django_capture_on_commit_callbacks(execute=True):
        later = timezone.now() + timedelta(minutes=25)
        assert requeue_stalled_telegram_posts.apply(kwargs={}).get() == 0
        assert telegram_posting.requeue_stalled_telegram_posts(now=later) == 0
    assert len(telegram_api.calls()) == 1  # Telegram asked for 30 minutes of quiet

    with django_capture_on_commit_callbacks(execute=True):
        lost = timezone.now() + timedelta(minutes=30) + telegram_posting.STALE_CLAIM_AFTER
        assert telegram_posting.requeue_stalled_telegram_posts(now=lost) == 1


# --- Retries and failures ------------------------------------------------------------------


def test_a_429_is_retried_after_retry_after_and_then_posted(telegram_api, publish, eager_retries):
    telegram_api.fail_next("retry_after", retry_after=7)

    post = publish(ArticleFactory())

    assert [call.answered for call in telegram_api.calls()] == [429, 200]
    assert len(telegram_api.posts()) == 1
    assert post.status == TelegramPost.Status.SENT
    assert post.attempts == 2


def test_a_429_asks_the_task_to_come_back_after_retry_after(telegram_api):
    post = TelegramPost.objects.create(article=PublishedArticleFactory(), chat_id=CHANNEL)
    telegram_api.fail_next("retry_after", retry_after=7)

    with pytest.raises(RetryLater) as retry:
        send_telegram_post(telegram_post_id=post.pk)

    assert retry.value.countdown == 7
    post.refresh_from_db()
    assert post.status == TelegramPost.Status.PENDING
    assert "429 Too Many Requests: retry after 7" in post.last_error
    assert telegram_api.posts() == []


def test_server_errors_back_off_longer_each_time(telegram_api):
    post = TelegramPost.objects.create(article=PublishedArticleFactory(), chat_id=CHANNEL)
    telegram_api.fail_next("server_error", times=3)

    countdowns = []
    for _ in range(3):
        with pytest.raises(RetryLater) as retry:
            send_telegram_post(telegram_post_id=post.pk)
        countdowns.append(retry.value.countdown)
    send_telegram_post(telegram_post_id=post.pk)

    assert countdowns == [10, 20, 40]
    post.refresh_from_db()
    assert post.status == TelegramPost.Status.SENT
    assert len(telegram_api.posts()) == 1


def test_a_hung_api_times_out_and_the_retry_posts_once(telegram_api, publish, eager_retries):
    telegram_api.fail_next("hang")

    post = publish(ArticleFactory())

    assert [call.answered for call in telegram_api.calls()] == [0, 200]
    assert len(telegram_api.posts()) == 1
    assert post.status == TelegramPost.Status.SENT


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        ("chat_not_found", "400 Bad Request: chat not found"),
        ("bot_kicked", "403 Forbidden: bot was kicked from the channel chat"),
    ],
)
def test_a_permanent_error_stops_and_is_recorded(telegram_api, publish, failure, error):
    telegram_api.fail_next(failure)

    post = publish(ArticleFactory())

    assert len(telegram_api.calls()) == 1
    assert post.status == TelegramPost.Status.FAILED
    assert error in post.last_error
    assert post.message_id is None


def test_a_wrong_chat_id_is_a_permanent_error(telegram_api, publish, settings):
    settings.TELEGRAM_CHAT_ID = "@not_our_channel"

    post = publish(ArticleFactory())

    assert post.chat_id == "@not_our_channel"
    assert post.status == TelegramPost.Status.FAILED
    assert "chat not found" in post.last_error


def test_the_task_gives_up_after_its_last_retry_and_records_why(
    telegram_api, publish, eager_retries
):
    telegram_api.fail_next("server_error", times=post_article_to_telegram.max_retries + 1)

    post = publish(ArticleFactory())

    assert len(telegram_api.calls()) == post_article_to_telegram.max_retries + 1
    assert post.status == TelegramPost.Status.FAILED
    assert post.last_error.startswith("Gave up after 11 attempts: sendMessage: 502 Bad Gateway")
    assert telegram_api.posts() == []


def test_the_bot_token_never_appears_in_a_recorded_error(telegram_api, settings):
    settings.TELEGRAM_API_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
    post = TelegramPost.objects.create(article=PublishedArticleFactory(), chat_id=CHANNEL)

    with pytest.raises(RetryLater):
        send_telegram_post(telegram_post_id=post.pk)

    post.refresh_from_db()
    assert "cannot reach Telegram" in post.last_error
    assert telegram_api.token not in post.last_error


# --- Configuration -------------------------------------------------------------------------


def test_without_a_token_publishing_works_and_nothing_is_posted(publish, settings):
    settings.TELEGRAM_BOT_TOKEN = ""
    settings.TELEGRAM_CHAT_ID = CHANNEL

    assert publish(ArticleFactory()) is None
    assert not TelegramPost.objects.exists()


def test_an_article_with_post_to_telegram_off_is_not_posted(telegram_api, publish):
    assert publish(ArticleFactory(post_to_telegram=False)) is None
    assert not TelegramPost.objects.exists()
    assert telegram_api.calls() == []


def test_half_a_telegram_configuration_fails_the_system_check(settings):
    settings.TELEGRAM_BOT_TOKEN = "123:abc"
    settings.TELEGRAM_CHAT_ID = ""
    assert [m.id for m in telegram.check_telegram_settings()] == ["newsletter.E101"]

    settings.TELEGRAM_BOT_TOKEN = ""
    settings.TELEGRAM_CHAT_ID = "@broadside"
    assert [m.id for m in telegram.check_telegram_settings()] == ["newsletter.W101"]

    settings.TELEGRAM_BOT_TOKEN = "123:abc"
    assert telegram.check_telegram_settings() == []


# --- Cutting text -------------------------------------------------------------------------


def test_truncating_keeps_whole_words_and_adds_an_ellipsis():
    assert truncate_at_word("one two three four", limit=12) == "one two\u2026"
    assert truncate_at_word("one two three", limit=13) == "one two three"
    assert truncate_at_word("one two, three", limit=10) == "one two\u2026"


def test_truncating_one_long_word_cuts_it_rather_than_returning_nothing():
    assert truncate_at_word("Donaudampfschifffahrt", limit=6) == "Donau\u2026"


def test_truncating_counts_emoji_as_telegram_does():
    text = "\U0001f30d" * 10  # each is two UTF-16 code units
    cut = truncate_at_word(text, limit=7)
    assert cut == "\U0001f30d" * 3 + "\u2026"
    assert visible_length(cut) == 7


@pytest.mark.django_db(transaction=True)
def test_two_workers_running_the_same_post_at_once_post_it_once(telegram_api):
    telegram_api.answer_delay = 0.3  # both workers are inside the call at the same time
    post = TelegramPost.objects.create(article=PublishedArticleFactory(), chat_id=CHANNEL)
    start = threading.Barrier(2)
    results: list[TelegramPost | None] = []

    def worker() -> None:
        start.wait()
        try:
            results.append(send_telegram_post(telegram_post_id=post.pk))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert sorted(result is None for result in results) == [False, True]
    assert len(telegram_api.calls()) == 1
    assert len(telegram_api.posts()) == 1
    post.refresh_from_db()
    assert post.status == TelegramPost.Status.SENT
    assert post.attempts == 1


@pytest.mark.parametrize("text", ["a < b", "AT&T", "1 > 0", "<b>open", "<script>x</script>"])
def test_the_stand_in_refuses_unescaped_html_as_telegram_does(telegram_api, text):
    with pytest.raises(telegram.TelegramPermanentError, match="can't parse entities"):
        telegram.send_message(chat_id=CHANNEL, text=text)
    assert telegram_api.posts() == []
