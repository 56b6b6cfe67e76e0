"""A signed-in reader's article page from a shared shell (`newsletter.views.reader_shell`):
rendered once for every reader in the same position, with each reader's own values
filled in, and renewed by every change to what it shows."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from newsletter.models import Article, Comment
from newsletter.services import comments as comment_service
from newsletter.services.content import PAYWALL_MARKER
from publication.models import Publication
from tests import processes
from tests.factories import (
    CommentFactory,
    MembershipFactory,
    PublishedArticleFactory,
    StaffUserFactory,
    SubscriberFactory,
    UserFactory,
)
from tests.html import element

pytestmark = pytest.mark.django_db

# A reader's first page: their User row, their paid status and when it could change by
# the clock alone (their record, `subscriptions.services.reader_cache`). Each page after
# that: none. Who may comment, the article, the publication and the shell come from the
# cache.
FIRST_SHELL_PAGE_QUERIES = 3
SHELL_PAGE_QUERIES = 0


def paid_user(name: str = "Paying Pat"):
    user = UserFactory(first_name=name)
    MembershipFactory(subscriber=SubscriberFactory(user=user, email=user.email))
    return user


def signed_in(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture
def article() -> Article:
    Publication.load()
    return PublishedArticleFactory(
        slug="long-read",
        visibility=Article.Visibility.PAID,
        body=f"<p>Free opening.</p>{PAYWALL_MARKER}<p>The members' conclusion.</p>",
    )


@pytest.fixture(params=["locmem", "redis"])
def any_cache(request, settings):
    """Each test on the embedded default cache and on production's Redis backend."""
    if request.param == "redis":
        settings.CACHES = {
            "default": {
                "BACKEND": "config.cache.SharedClientRedisCache",
                "LOCATION": processes.redis_database_url(5),
                "KEY_PREFIX": "test-reader-shell",
            }
        }
    from django.core.cache import cache

    cache.clear()
    yield cache
    cache.clear()


def page(client: Client, query: str = "") -> str:
    response = client.get(f"/p/long-read/{query}")
    assert response.status_code == 200
    return response.content.decode()


def comment_list(html: str) -> str:
    return element(html, css_class="comments-thread")


def test_a_paid_reader_s_page_with_a_long_discussion_runs_no_query_and_renders_nothing(
    article, any_cache
):
    commenters = UserFactory.create_batch(5)
    for n in range(comment_service.THREAD_PAGE_SIZE + 10):
        parent = CommentFactory(article=article, user=commenters[n % 5], body=f"Remark {n}.")
        CommentFactory(article=article, user=commenters[(n + 1) % 5], parent=parent, body="Re.")
    page(signed_in(paid_user("First")))  # the first paid reader's visit renders the shell
    client = signed_in(paid_user("Second"))

    with CaptureQueriesContext(connection) as first:
        client.get("/p/long-read/")
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/p/long-read/")

    assert len(first) == FIRST_SHELL_PAGE_QUERIES, [q["sql"] for q in first.captured_queries]
    assert len(queries) == SHELL_PAGE_QUERIES, [q["sql"] for q in queries.captured_queries]
    assert response.templates == []  # filled in from the shell, not rendered
    html = response.content.decode()
    assert "The members' conclusion." in html
    assert "Remark 49." in html and "Remark 50." not in html
    assert "Commenting as <strong>Second</strong>" in html
    assert "private" in response["Cache-Control"]


def test_each_reader_gets_their_own_name_and_a_csrf_token_that_works(article, any_cache):
    page(signed_in(paid_user("Ada")))
    reader = paid_user("Grace <Hopper>")
    client = signed_in(reader, enforce_csrf_checks=True)

    html = page(client)
    form = element(html, css_class="comment-form")
    assert "Commenting as <strong>Grace &lt;Hopper&gt;</strong>" in form
    assert "Ada" not in html
    assert "shell-" not in html
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    assert token is not None
    response = client.post(
        "/p/long-read/comments/", {"body": "Posted from a shell.", "csrfmiddlewaretoken": token[1]}
    )
    assert response.status_code == 302
    assert Comment.objects.get().user == reader


def test_a_reader_who_has_not_chosen_a_name_is_asked_to_choose_one(article, any_cache):
    page(signed_in(paid_user("Named")))
    unnamed = signed_in(paid_user(""))

    form = element(page(unnamed), css_class="comment-form")

    assert "choose a name" in form and "change your name" not in form
    assert f"<strong>{comment_service.FALLBACK_DISPLAY_NAME}</strong>" in form


def test_paid_text_from_a_paid_reader_s_shell_never_reaches_a_free_reader(article, any_cache):
    assert "The members' conclusion." in page(signed_in(paid_user()))
    free = signed_in(UserFactory(first_name="Free"))

    html = page(free)

    assert "The members' conclusion." not in html
    assert "Free opening." in html
    assert "This article is for paid subscribers" in element(html, id="paywall")
    assert 'class="comment-form"' not in html


def test_a_free_reader_s_shell_never_hides_the_paid_text_from_a_paid_reader(article, any_cache):
    assert "The members' conclusion." not in page(signed_in(UserFactory()))

    assert "The members' conclusion." in page(signed_in(paid_user()))


def test_a_comment_posted_edited_hidden_or_deleted_shows_on_the_next_page(article, any_cache):
    reader = signed_in(paid_user("Reader"))
    writer = paid_user("Writer")
    page(reader)

    comment = comment_service.post_comment(user=writer, article=article, body="Fresh remark.")
    assert "Fresh remark." in comment_list(page(reader))

    comment_service.edit_comment(user=writer, comment=comment, body="Second thoughts.")
    assert "Second thoughts." in comment_list(page(reader))

    comment_service.hide_comments(comments=Comment.objects.filter(pk=comment.pk))
    assert "Second thoughts." not in page(reader)

    comment_service.unhide_comments(comments=Comment.objects.filter(pk=comment.pk))
    assert "Second thoughts." in page(reader)
    comment_service.delete_comment(user=writer, comment=Comment.objects.get(pk=comment.pk))
    assert "Second thoughts." not in page(reader)


def test_a_ban_shows_on_the_banned_reader_s_next_page_and_only_theirs(article, any_cache):
    banned_user = paid_user("Troll")
    banned, other = signed_in(banned_user), signed_in(paid_user("Other"))
    assert 'class="comment-form"' in page(banned)

    comment_service.ban_commenter(user=banned_user)

    assert "You can no longer comment" in page(banned)
    assert 'class="comment-form"' not in page(banned)
    assert 'class="comment-form"' in page(other)


def test_a_changed_name_shows_on_the_reader_s_comments_at_once(article, any_cache):
    writer = paid_user("Old Name")
    CommentFactory(article=article, user=writer, body="Signed remark.")
    reader = signed_in(paid_user("Reader"))
    assert "Old Name" in comment_list(page(reader))

    comment_service.set_display_name(user=writer, name="New Name")

    names = comment_list(page(reader))
    assert "New Name" in names and "Old Name" not in names


def test_saving_the_article_shows_on_the_next_page(article, any_cache):
    reader = signed_in(paid_user())
    page(reader)

    article.title = "A retitled long read"
    article.save()

    assert "A retitled long read" in page(reader)


def test_only_the_writer_of_a_recent_comment_gets_its_edit_links(article, any_cache):
    writer_user = paid_user("Writer")
    writer, other = signed_in(writer_user), signed_in(paid_user("Other"))
    comment = comment_service.post_comment(user=writer_user, article=article, body="My words.")
    edit_link = f"/comments/{comment.pk}/edit/"

    assert edit_link not in page(other)  # the shell, rendered by another reader
    assert edit_link in page(writer)
    assert edit_link not in page(other)

    Comment.objects.filter(pk=comment.pk).update(
        created_at=timezone.now() - comment_service.EDIT_WINDOW - timedelta(seconds=1)
    )
    comment_service.invalidate_pages()
    assert edit_link not in page(writer)


def test_an_editor_gets_their_own_page_with_the_hidden_comments(article, any_cache):
    hidden = CommentFactory(article=article, body="Hidden remark.", status=Comment.Status.HIDDEN)
    CommentFactory(article=article, parent=hidden, body="A visible reply.")
    reader = signed_in(paid_user())
    assert "Hidden remark." not in page(reader)

    html = page(signed_in(StaffUserFactory()))

    assert "Hidden remark." in html
    assert "Hidden remark." not in page(reader)


def test_the_discussion_s_order_and_page_each_have_their_own_shell(article, any_cache):
    for n in range(comment_service.THREAD_PAGE_SIZE + 1):
        CommentFactory(article=article, body=f"Remark {n}.")
    client = signed_in(paid_user())
    page(client)

    newest = comment_list(page(client, "?order=newest"))
    second = comment_list(page(client, "?cpage=2"))

    assert newest.index("Remark 50.") < newest.index("Remark 49.")
    assert "Remark 50." in second and "Remark 0." not in second


def test_a_message_waiting_for_the_reader_is_shown_once_on_their_own_page(article, any_cache):
    writer_user = paid_user("Writer")
    writer = signed_in(writer_user)
    page(signed_in(paid_user("Other")))  # a shell exists for this position
    comment = comment_service.post_comment(user=writer_user, article=article, body="Oops.")

    response = writer.post(f"/comments/{comment.pk}/delete/", follow=True)

    assert "Your comment was deleted." in response.content.decode()
    assert "Your comment was deleted." not in page(writer)
    assert "Your comment was deleted." not in page(signed_in(paid_user("Third")))


def test_a_name_changed_in_the_admin_s_users_page_shows_on_the_comments_at_once(
    article, any_cache, admin_client
):
    writer = paid_user("Old Name")
    CommentFactory(article=article, user=writer, body="Signed remark.")
    reader = signed_in(paid_user("Reader"))
    assert "Old Name" in comment_list(page(reader))
    anonymous_page = Client().get(article.get_absolute_url()).content.decode()
    assert "Old Name" in anonymous_page
    page(reader)  # the shell and the discussion are stored now

    joined = timezone.localtime(writer.date_joined)
    response = admin_client.post(
        f"/admin/auth/user/{writer.pk}/change/",
        {
            "username": writer.username,
            "first_name": "New Name",
            "last_name": "",
            "email": writer.email,
            "is_active": "on",
            "date_joined_0": joined.strftime("%Y-%m-%d"),
            "date_joined_1": joined.strftime("%H:%M:%S"),
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]

    names = comment_list(page(reader))
    assert "New Name" in names and "Old Name" not in names
    anonymous_page = Client().get(article.get_absolute_url()).content.decode()
    assert "New Name" in anonymous_page and "Old Name" not in anonymous_page
