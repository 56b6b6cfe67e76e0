import re
from datetime import timedelta

import pytest
import redis
from django.contrib.auth.models import Permission
from django.core import mail
from django.db import connection
from django.template.loader import render_to_string
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from newsletter.models import Article, Comment, CommentBan
from newsletter.services import comments as comment_service
from newsletter.tasks import send_comment_digests
from publication.models import Publication
from tests import processes
from tests.factories import (
    AuthorFactory,
    CommentFactory,
    MembershipFactory,
    PublishedArticleFactory,
    StaffUserFactory,
    SubscriberFactory,
    UserFactory,
)
from tests.fakes.smtp import FakeSMTPServer
from tests.html import element

pytestmark = pytest.mark.django_db


@pytest.fixture
def article():
    return PublishedArticleFactory(slug="the-long-war")


@pytest.fixture
def reader():
    return UserFactory(first_name="Ada")


@pytest.fixture
def paid_reader():
    user = UserFactory(first_name="Paying Pat")
    MembershipFactory(subscriber=SubscriberFactory(user=user, email=user.email))
    return user


@pytest.fixture
def reader_client(client, reader):
    client.force_login(reader)
    return client


@pytest.fixture
def paid_policy():
    publication = Publication.load()
    publication.comment_policy = Publication.CommentPolicy.PAID
    publication.save()
    return publication


def post_comment(client, article, body="A thoughtful remark.", **extra):
    return client.post(f"/p/{article.slug}/comments/", {"body": body, **extra})


def thread_html(client, article, query=""):
    response = client.get(f"/p/{article.slug}/{query}")
    assert response.status_code == 200
    return response.content.decode()


# --- Permissions ---------------------------------------------------------------------------


def test_anonymous_readers_see_comments_and_an_invitation_but_cannot_post(client, article):
    CommentFactory(article=article, body="Visible to everyone")

    html = thread_html(client, article)

    assert "Visible to everyone" in html
    assert "/accounts/login/?next=" in html
    assert 'href="/subscribe/"' in html
    assert 'name="body"' not in html

    response = post_comment(client, article)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert Comment.objects.filter(body="A thoughtful remark.").count() == 0


def test_a_free_reader_comments_when_everyone_signed_in_may(reader_client, reader, article):
    response = post_comment(reader_client, article, body="First!")

    comment = Comment.objects.get()
    assert (comment.user, comment.article, comment.body) == (reader, article, "First!")
    assert not comment.is_editor_reply
    assert response.status_code == 302
    assert response["Location"] == f"/p/{article.slug}/#comment-{comment.pk}"
    html = thread_html(reader_client, article)
    assert "First!" in html and "Ada" in html
    assert "1 comment" in html


def test_a_free_reader_is_invited_to_upgrade_when_only_paid_readers_comment(
    reader_client, article, paid_policy, plans_on_sale
):
    html = thread_html(reader_client, article)
    # The header and footer link /upgrade/ on every page: look in the discussion only.
    thread = element(html, css_class="comments-thread")
    assert 'The discussion is open to paid subscribers. <a href="/upgrade/">' in thread
    assert 'class="comment-form"' not in thread
    assert "Post comment" not in html

    response = post_comment(reader_client, article)

    assert response.status_code == 403
    assert "paid subscribers" in response.content.decode()
    assert not Comment.objects.exists()


def test_a_paid_reader_comments_when_only_paid_readers_may(
    client, paid_reader, article, paid_policy
):
    client.force_login(paid_reader)

    assert "Post comment" in thread_html(client, article)
    response = post_comment(client, article, body="Worth every penny.")

    assert response.status_code == 302
    assert Comment.objects.get().user == paid_reader


def test_a_free_reader_cannot_join_the_discussion_of_a_paid_article(reader_client, article):
    article.visibility = Article.Visibility.PAID
    article.save()

    response = post_comment(reader_client, article)

    assert response.status_code == 403
    assert not Comment.objects.exists()


def test_everyone_who_can_open_a_paid_article_sees_its_discussion(client, article):
    article.visibility = Article.Visibility.PAID
    article.body = '<p>Free part.</p><hr class="paywall"><p>Secret paid analysis.</p>'
    article.save()
    CommentFactory(article=article, body="Readers talk here")

    html = thread_html(client, article)

    assert "Readers talk here" in html
    assert "Secret paid analysis" not in html


def test_a_banned_reader_sees_the_discussion_but_cannot_comment(reader_client, reader, article):
    CommentFactory(article=article, body="Earlier words")
    comment_service.ban_commenter(user=reader, reason="Abuse")

    html = thread_html(reader_client, article)
    assert "Earlier words" in html
    assert "can no longer comment" in html
    assert "Post comment" not in html

    response = post_comment(reader_client, article)
    assert response.status_code == 403
    assert Comment.objects.count() == 1


def test_a_closed_article_keeps_its_comments_but_takes_no_new_ones(reader_client, article):
    CommentFactory(article=article, body="Said before closing")
    article.comments_enabled = False
    article.save()

    html = thread_html(reader_client, article)
    assert "Said before closing" in html
    assert "Comments are closed" in html
    assert "Post comment" not in html

    response = post_comment(reader_client, article)
    assert response.status_code == 403
    assert Comment.objects.count() == 1


def test_drafts_have_no_discussion(reader_client):
    draft = PublishedArticleFactory(status=Article.Status.DRAFT, published_at=None)

    assert reader_client.get(f"/p/{draft.slug}/comments/").status_code == 404
    assert post_comment(reader_client, draft).status_code == 404


def test_the_discussion_page_of_an_editor_stays_out_of_shared_caches(client, article):
    CommentFactory(article=article, body="Hidden words", status=Comment.Status.HIDDEN)
    client.force_login(StaffUserFactory())

    response = client.get(f"/p/{article.slug}/comments/")

    assert "Hidden words" in response.content.decode()
    assert "private" in response["Cache-Control"]
    assert "Cookie" in response["Vary"]


def test_posting_without_a_csrf_token_is_refused(reader, article):
    client = Client(enforce_csrf_checks=True)
    client.force_login(reader)

    response = post_comment(client, article)

    assert response.status_code == 403
    assert not Comment.objects.exists()


def test_the_comment_form_on_the_article_page_carries_a_working_csrf_token(reader, article):
    client = Client(enforce_csrf_checks=True)
    client.force_login(reader)
    html = thread_html(client, article)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert token is not None

    response = post_comment(client, article, csrfmiddlewaretoken=token.group(1))

    assert response.status_code == 302
    assert Comment.objects.get().body == "A thoughtful remark."


def test_a_filled_honeypot_posts_nothing(reader_client, article):
    response = post_comment(reader_client, article, website="http://spam.example")

    assert response.status_code == 302
    assert not Comment.objects.exists()


# --- Bodies and escaping -------------------------------------------------------------------


def test_hostile_input_is_shown_as_text_and_links_are_marked_as_user_content(
    reader_client, reader, article
):
    reader.first_name = '<img src=x onerror="alert(1)">'
    reader.save()
    hostile = (
        "<script>alert('x')</script> <b>bold</b> <a href=\"javascript:alert(1)\">click</a>\n"
        "See https://example.org/report?a=1&b=2 and javascript:alert(2)"
    )

    post_comment(reader_client, article, body=hostile)
    html = thread_html(reader_client, article)

    assert "<script>alert" not in html
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert '<a href="javascript:' not in html
    assert '&lt;a href="javascript:alert(1)"&gt;click&lt;/a&gt;' in html
    assert "<img src=x" not in html and "&lt;img src=x" in html
    assert '<a href="https://example.org/report?a=1&amp;b=2" rel="nofollow ugc noopener">' in html


def test_paragraphs_and_line_breaks_of_a_comment_are_kept():
    html = comment_service.render_comment_body(body="One\nline\n\nTwo")
    assert html == "<p>One<br>line</p>\n\n<p>Two</p>"


def test_empty_and_overlong_comments_are_refused(reader_client, article):
    assert post_comment(reader_client, article, body="   ").status_code == 400
    too_long = "x" * (comment_service.MAX_LENGTH + 1)
    response = post_comment(reader_client, article, body=too_long)
    assert response.status_code == 400
    assert too_long in response.content.decode()  # the reader's text is not lost
    assert not Comment.objects.exists()


def test_a_comment_at_the_limit_counts_line_breaks_as_one_character_as_the_textarea_does(
    reader_client, article
):
    lines = ["x" * 99] * 50
    # Browsers count a line break as one character against maxlength, then send CRLF.
    response = post_comment(reader_client, article, body="\r\n".join(lines))

    assert response.status_code == 302
    comment = Comment.objects.get()
    assert comment.body == "\n".join(lines)
    assert len(comment.body) <= comment_service.MAX_LENGTH


# --- Replies, order, editors ---------------------------------------------------------------


def test_replies_are_one_level_deep(reader_client, reader, article):
    top = CommentFactory(article=article)
    reply = CommentFactory(article=article, parent=top)

    post_comment(reader_client, article, body="Answering the reply", parent=reply.pk)

    answer = Comment.objects.get(body="Answering the reply")
    assert answer.parent == top


def test_a_reply_must_answer_a_comment_of_the_same_article(reader_client, article):
    elsewhere = CommentFactory()

    response = post_comment(reader_client, article, body="Lost reply", parent=elsewhere.pk)

    assert response.status_code == 400
    assert not Comment.objects.filter(body="Lost reply").exists()


def test_comments_read_oldest_first_or_newest_first(client, article):
    now = timezone.now()
    old = CommentFactory(article=article, body="Older words")
    new = CommentFactory(article=article, body="Newer words")
    Comment.objects.filter(pk=old.pk).update(created_at=now - timedelta(hours=2))
    Comment.objects.filter(pk=new.pk).update(created_at=now - timedelta(hours=1))

    oldest = thread_html(client, article)
    newest = thread_html(client, article, "?order=newest")

    assert oldest.index("Older words") < oldest.index("Newer words")
    assert newest.index("Newer words") < newest.index("Older words")


def test_long_discussions_come_a_page_of_threads_at_a_time(client, article, monkeypatch):
    monkeypatch.setattr(comment_service, "THREAD_PAGE_SIZE", 3)
    now = timezone.now()
    for n in range(5):
        top = CommentFactory(article=article, body=f"Thread {n}")
        Comment.objects.filter(pk=top.pk).update(created_at=now - timedelta(minutes=10 - n))
    CommentFactory(article=article, parent=top, body="Reply on the last thread")

    first = thread_html(client, article)
    second = thread_html(client, article, "?order=oldest&cpage=2")

    assert "6 comments" in first
    assert [f"Thread {n}" in first for n in range(5)] == [True, True, True, False, False]
    assert "cpage=2" in first
    assert [f"Thread {n}" in second for n in range(5)] == [False, False, False, True, True]
    assert "Reply on the last thread" in second
    assert "cpage=1" in second and "cpage=3" not in second


def test_after_posting_the_reader_lands_on_the_page_that_shows_their_comment(
    reader_client, article, monkeypatch
):
    monkeypatch.setattr(comment_service, "THREAD_PAGE_SIZE", 2)
    first = CommentFactory(article=article, body="Thread 0")
    CommentFactory.create_batch(2, article=article)

    new = post_comment(reader_client, article, body="The newest thread")
    reply = post_comment(reader_client, article, body="A reply on page one", parent=first.pk)

    posted = Comment.objects.get(body="The newest thread")
    assert new["Location"] == f"/p/{article.slug}/?order=oldest&cpage=2#comment-{posted.pk}"
    assert "The newest thread" in thread_html(reader_client, article, "?order=oldest&cpage=2")
    replied = Comment.objects.get(body="A reply on page one")
    assert reply["Location"] == f"/p/{article.slug}/#comment-{replied.pk}"


def test_editors_replies_are_marked_and_signed_with_their_author_name(client, article):
    editor = StaffUserFactory()
    AuthorFactory(user=editor, display_name="Maria Editor")
    top = CommentFactory(article=article)
    client.force_login(editor)

    post_comment(client, article, body="Thanks for reading.", parent=top.pk)

    reply = Comment.objects.get(body="Thanks for reading.")
    assert reply.is_editor_reply
    html = thread_html(Client(), article)
    assert "Maria Editor" in html
    assert 'class="comment-badge">Editor<' in html


# --- Edit and delete window ----------------------------------------------------------------


def test_a_reader_edits_their_comment_within_the_window(reader_client, reader, article):
    comment = CommentFactory(article=article, user=reader, body="Tpyo")

    assert reader_client.get(f"/comments/{comment.pk}/edit/").status_code == 200
    response = reader_client.post(f"/comments/{comment.pk}/edit/", {"body": "Typo"})

    assert response.status_code == 302
    comment.refresh_from_db()
    assert comment.body == "Typo"
    assert comment.edited_at is not None
    assert "(edited)" in thread_html(reader_client, article)


def test_edits_and_deletes_are_refused_once_the_window_has_passed(reader_client, reader, article):
    comment = CommentFactory(article=article, user=reader, body="Set in stone")
    Comment.objects.filter(pk=comment.pk).update(
        created_at=timezone.now() - comment_service.EDIT_WINDOW - timedelta(seconds=1)
    )

    assert f"/comments/{comment.pk}/edit/" not in thread_html(reader_client, article)
    assert reader_client.get(f"/comments/{comment.pk}/edit/").status_code == 403
    assert reader_client.post(f"/comments/{comment.pk}/edit/", {"body": "X"}).status_code == 403
    assert reader_client.post(f"/comments/{comment.pk}/delete/").status_code == 403
    comment.refresh_from_db()
    assert comment.body == "Set in stone"
    assert comment.status == Comment.Status.VISIBLE


def test_readers_cannot_touch_other_readers_comments(reader_client, article):
    someone_else = CommentFactory(article=article, body="Not yours")

    assert (
        reader_client.post(f"/comments/{someone_else.pk}/edit/", {"body": "Mine"}).status_code
        == 404
    )
    assert reader_client.post(f"/comments/{someone_else.pk}/delete/").status_code == 404
    someone_else.refresh_from_db()
    assert someone_else.body == "Not yours"


def test_deleting_a_comment_with_replies_leaves_a_placeholder(reader_client, reader, article):
    lonely = CommentFactory(article=article, user=reader, body="Nobody answered")
    answered = CommentFactory(article=article, user=reader, body="Somebody answered")
    CommentFactory(article=article, parent=answered, body="The answer")

    assert reader_client.post(f"/comments/{lonely.pk}/delete/").status_code == 302
    assert reader_client.post(f"/comments/{answered.pk}/delete/").status_code == 302

    assert not Comment.objects.filter(pk=lonely.pk).exists()
    answered.refresh_from_db()
    assert (answered.status, answered.body) == (Comment.Status.DELETED, "")
    html = thread_html(reader_client, article)
    assert "Somebody answered" not in html
    assert "deleted by its writer" in html
    assert "The answer" in html


# --- Rate limit ----------------------------------------------------------------------------


def test_a_reader_posting_too_fast_is_stopped_and_others_are_not(reader_client, article):
    for n in range(comment_service.RATE_LIMIT_COUNT):
        assert post_comment(reader_client, article, body=f"Comment {n}").status_code == 302

    response = post_comment(reader_client, article, body="One too many")

    assert response.status_code == 429
    assert "too fast" in response.content.decode()
    assert not Comment.objects.filter(body="One too many").exists()

    other = Client()
    other.force_login(UserFactory())
    assert post_comment(other, article, body="Someone else").status_code == 302


@pytest.fixture
def redis_cache(settings):
    """The production cache backend, on a Redis database of this file's own."""
    settings.CACHES = {
        "default": {
            "BACKEND": "config.cache.SharedClientRedisCache",
            "LOCATION": processes.redis_database_url(6),
            "KEY_PREFIX": "test-comments",
        }
    }
    from django.core.cache import cache

    cache.clear()
    yield cache
    cache.clear()


def test_the_rate_limit_holds_in_redis_and_the_window_expires(reader, article, redis_cache):
    for n in range(comment_service.RATE_LIMIT_COUNT):
        comment_service.post_comment(user=reader, article=article, body=f"Comment {n}")
    with pytest.raises(comment_service.CommentRateLimited):
        comment_service.post_comment(user=reader, article=article, body="One too many")

    # Counting kept the expiry the first comment set, so the window does close.
    key = f"comments:rate:{reader.pk}"
    server = redis.Redis.from_url(processes.redis_database_url(6))
    seconds_left = server.ttl(redis_cache.make_and_validate_key(key))
    assert 0 < seconds_left <= comment_service.RATE_LIMIT_WINDOW.total_seconds()

    redis_cache.delete(key)  # the window has passed
    comment_service.post_comment(user=reader, article=article, body="After a pause")
    assert Comment.objects.filter(user=reader).count() == comment_service.RATE_LIMIT_COUNT + 1


# --- Moderation ----------------------------------------------------------------------------


@pytest.fixture
def admin_client_():
    client = Client()
    client.force_login(StaffUserFactory())
    return client


def admin_action(client, action, comments):
    return client.post(
        "/admin/newsletter/comment/",
        {"action": action, "_selected_action": [c.pk for c in comments]},
    )


def test_hiding_a_comment_removes_it_from_readers_and_counts(admin_client_, client, article):
    abusive = CommentFactory(article=article, body="Something abusive")
    CommentFactory(article=article, body="Something civil")

    assert admin_action(admin_client_, "hide", [abusive]).status_code == 302

    html = thread_html(client, article)
    assert "Something abusive" not in html
    assert "Something civil" in html
    assert "1 comment" in html
    counted = comment_service.with_comment_counts(Article.objects.filter(pk=article.pk)).get()
    assert counted.comment_count == 1
    # Editors still see it, marked, so they can change their mind.
    assert "Hidden from readers" in thread_html(admin_client_, article)

    admin_action(admin_client_, "unhide", [abusive])
    assert "Something abusive" in thread_html(client, article)


def test_staff_who_may_only_view_comments_cannot_hide_them_or_ban_writers(client, article):
    viewer = StaffUserFactory(is_superuser=False)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_comment"))
    client.force_login(viewer)
    comment = CommentFactory(article=article)

    for action in ("hide", "ban_writers_and_hide"):
        admin_action(client, action, [comment])

    assert client.get("/admin/newsletter/comment/").status_code == 200
    comment.refresh_from_db()
    assert comment.status == Comment.Status.VISIBLE
    assert not CommentBan.objects.exists()


def test_a_hidden_comment_keeps_its_visible_replies_under_a_placeholder(client, article):
    top = CommentFactory(article=article, body="Removed words", status=Comment.Status.HIDDEN)
    CommentFactory(article=article, parent=top, body="A civil reply")

    html = thread_html(client, article)

    assert "Removed words" not in html
    assert "removed by a moderator" in html
    assert "A civil reply" in html


def test_banning_from_the_queue_stops_the_writer_and_can_hide_their_comments(
    admin_client_, reader, reader_client, article
):
    troll = CommentFactory(article=article, user=reader, body="Troll words")
    CommentFactory(article=article, user=reader, body="More troll words")

    admin_action(admin_client_, "ban_writers_and_hide", [troll])

    assert CommentBan.objects.filter(user=reader).exists()
    assert set(Comment.objects.values_list("status", flat=True)) == {"hidden"}
    assert post_comment(reader_client, article).status_code == 403


def test_the_moderation_queue_lists_recent_comments_with_filters(admin_client_, article):
    CommentFactory(article=article, body="<i>queued</i> words")
    CommentFactory(article=article, body="Hidden words", status=Comment.Status.HIDDEN)

    everything = admin_client_.get("/admin/newsletter/comment/").content.decode()
    hidden = admin_client_.get("/admin/newsletter/comment/?status=hidden").content.decode()

    assert "&lt;i&gt;queued&lt;/i&gt; words" in everything
    assert "Hidden words" in everything
    assert "Hidden words" in hidden and "queued" not in hidden


def test_editors_open_a_comment_and_the_list_of_bans(admin_client_, reader, article):
    comment = CommentFactory(article=article, user=reader)
    comment_service.ban_commenter(user=reader, reason="Spam links")

    change = admin_client_.get(f"/admin/newsletter/comment/{comment.pk}/change/")
    bans = admin_client_.get("/admin/newsletter/commentban/")

    assert change.status_code == 200
    assert comment.body in change.content.decode()
    assert bans.status_code == 200
    assert "Spam links" in bans.content.decode()


def test_saving_a_comment_in_the_admin_cannot_bring_back_one_its_writer_deleted(
    admin_client_, reader, article
):
    deleted = CommentFactory(article=article, user=reader, body="Taken back")
    CommentFactory(article=article, parent=deleted, body="An answer")
    Comment.objects.filter(pk=deleted.pk).update(status=Comment.Status.DELETED, body="")

    response = admin_client_.post(
        f"/admin/newsletter/comment/{deleted.pk}/change/", {"status": "visible"}
    )

    assert response.status_code == 302
    deleted.refresh_from_db()
    assert (deleted.status, deleted.body) == (Comment.Status.DELETED, "")


# --- Counts and queries --------------------------------------------------------------------


def test_comment_counts_for_a_list_of_articles_take_one_query(django_assert_num_queries):
    articles = PublishedArticleFactory.create_batch(3)
    for n, article in enumerate(articles):
        CommentFactory.create_batch(n, article=article)
    CommentFactory(article=articles[0], status=Comment.Status.HIDDEN)

    with django_assert_num_queries(1):
        counted = list(comment_service.with_comment_counts(Article.objects.order_by("pk")))

    assert [a.comment_count for a in counted] == [0, 1, 2]


def test_the_article_page_needs_no_more_queries_for_fifty_comments_than_for_one(
    client, paid_reader, article, django_assert_max_num_queries
):
    client.force_login(paid_reader)
    first = CommentFactory(article=article)
    thread_html(client, article)  # warm up: the first request creates the publication row
    from newsletter.services.page_cache import invalidate_pages

    invalidate_pages()  # both measured pages read the discussion from the database
    with CaptureQueriesContext(connection) as one:
        thread_html(client, article)

    readers = UserFactory.create_batch(10)
    for n in range(49):
        CommentFactory(article=article, user=readers[n % 10], parent=first if n % 3 else None)
    invalidate_pages()
    with django_assert_max_num_queries(len(one.captured_queries)):
        html = thread_html(client, article)
    assert "50 comments" in html


# --- Display name --------------------------------------------------------------------------


def test_a_reader_chooses_the_name_shown_with_their_comments(reader_client, reader, article):
    response = reader_client.post(
        "/account/name/", {"name": "  Ada   Lovelace ", "next": f"/p/{article.slug}/#comments"}
    )

    assert response.status_code == 302
    assert response["Location"] == f"/p/{article.slug}/#comments"
    reader.refresh_from_db()
    assert reader.first_name == "Ada Lovelace"


def test_the_account_page_block_shows_the_comment_name_escaped(reader):
    reader.first_name = "<i>Ada</i>"
    html = render_to_string("comments/_account_name.html", {"user": reader})

    assert "&lt;i&gt;Ada&lt;/i&gt;" in html
    assert 'href="/account/name/?next=/account/"' in html


def test_the_name_form_does_not_redirect_off_site(reader_client):
    response = reader_client.post(
        "/account/name/", {"name": "Ada", "next": "https://evil.example/"}
    )
    assert response["Location"] == "/account/"


# --- Digest to authors ---------------------------------------------------------------------


def test_authors_get_no_digest_unless_the_publication_switches_it_on(article):
    article.authors.add(AuthorFactory(user=StaffUserFactory()))
    CommentFactory(article=article)

    assert comment_service.send_comment_digests() == 0
    assert mail.outbox == []


def test_authors_get_each_new_comment_once_in_a_digest(article):
    publication = Publication.load()
    publication.comment_digest_enabled = True
    publication.save()
    author_user = StaffUserFactory(email="writer@example.com")
    article.authors.add(AuthorFactory(user=author_user))
    article.body = '<p>Free part.</p><hr class="paywall"><p>Secret paid analysis.</p>'
    article.save()
    CommentFactory(article=article, body="Great piece <b>really</b>")
    CommentFactory(article=article, user=author_user, body="My own reply")
    CommentFactory(article=article, body="Removed", status=Comment.Status.HIDDEN)

    assert send_comment_digests.delay().get() == 1

    (message,) = mail.outbox
    assert message.to == ["writer@example.com"]
    assert "1 new comment" in message.subject
    assert "Great piece <b>really</b>" in message.body
    html = message.alternatives[0][0]
    assert "Great piece &lt;b&gt;really&lt;/b&gt;" in html
    for part in (message.body, html):
        assert "My own reply" not in part
        assert "Removed" not in part
        assert "Secret paid analysis" not in part

    assert comment_service.send_comment_digests() == 0
    assert len(mail.outbox) == 1


def test_a_digest_gathers_new_comments_of_several_articles_and_skips_old_ones():
    publication = Publication.load()
    publication.comment_digest_enabled = True
    publication.save()
    author = AuthorFactory(user=StaffUserFactory(email="writer@example.com"))
    first, second = PublishedArticleFactory.create_batch(2)
    for article in (first, second):
        article.authors.add(author)
    CommentFactory(article=first, body="On the first")
    CommentFactory(article=second, body="On the second")
    stale = CommentFactory(article=second, body="Long ago")
    Comment.objects.filter(pk=stale.pk).update(
        created_at=timezone.now() - comment_service.DIGEST_LOOKBACK - timedelta(hours=1)
    )

    assert comment_service.send_comment_digests() == 1

    (message,) = mail.outbox
    assert message.subject == "2 new comments on 2 of your articles"
    assert "On the first" in message.body and "On the second" in message.body
    assert "Long ago" not in message.body
    assert f"http://testserver/p/{first.slug}/#comments" in message.body


@pytest.fixture
def smtp_server(settings):
    server = FakeSMTPServer().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = server.host, server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield server
    server.stop()


def test_an_author_whose_address_is_refused_does_not_make_the_others_get_it_again(
    article, smtp_server
):
    publication = Publication.load()
    publication.comment_digest_enabled = True
    publication.save()
    for name in ("Ann", "Bob"):
        user = StaffUserFactory(email=f"{name.lower()}@example.com")
        article.authors.add(AuthorFactory(user=user, display_name=name))
    smtp_server.refuse("bob@example.com", code=550)
    CommentFactory(article=article, body="Worth a reply")

    assert comment_service.send_comment_digests() == 1
    assert comment_service.send_comment_digests() == 0

    assert smtp_server.recipients() == ["ann@example.com"]
    assert [address for address, _code in smtp_server.refused] == ["bob@example.com"]


def test_digests_wait_for_the_next_run_when_the_mail_server_refuses_everyone(article, smtp_server):
    publication = Publication.load()
    publication.comment_digest_enabled = True
    publication.save()
    article.authors.add(AuthorFactory(user=StaffUserFactory(email="ann@example.com")))
    CommentFactory(article=article, body="Worth a reply")
    smtp_server.refuse("ann@example.com", code=451, times=1)

    assert comment_service.send_comment_digests() == 0
    assert comment_service.send_comment_digests() == 1

    assert smtp_server.recipients() == ["ann@example.com"]
