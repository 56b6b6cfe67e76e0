"""Every page carries a Content-Security-Policy; reader pages allow no inline script."""

from __future__ import annotations

import pytest

from publication.models import Publication
from tests.factories import PublishedArticleFactory

pytestmark = pytest.mark.django_db


def _policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {
        name: values
        for name, *values in (part.split() for part in header.split(";") if part.strip())
    }


@pytest.fixture(autouse=True)
def _publication():
    Publication.load()


@pytest.mark.parametrize(
    "path",
    ["/", "/p/the-article/", "/subscribe/", "/accounts/login/", "/upgrade/", "/no-such-page/"],
)
def test_reader_pages_run_only_the_site_s_own_scripts_and_styles(client, path):
    PublishedArticleFactory(slug="the-article")
    policy = _policy(client.get(path))
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "https://checkout.stripe.com" in policy["form-action"]


def test_a_page_served_from_the_page_cache_carries_the_policy_too(client):
    article = PublishedArticleFactory()
    client.get(article.get_absolute_url())
    cached = client.get(article.get_absolute_url())
    assert cached["X-Page-Cache"] == "hit"
    assert _policy(cached)["script-src"] == ["'self'"]


def test_the_admin_allows_inline_script_for_its_editor_and_nothing_else_more(editor_client):
    policy = _policy(editor_client.get("/admin/newsletter/article/add/"))
    assert policy["script-src"] == ["'self'", "'unsafe-inline'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["form-action"][0] == "'self'"


def test_reader_pages_have_no_inline_style_or_script(client):
    article = PublishedArticleFactory(slug="inline-check")
    for path in ["/", article.get_absolute_url(), "/subscribe/"]:
        html = client.get(path).content.decode()
        assert " style=" not in html, path
        assert "<script" not in html, path


def test_the_admin_s_and_a_reader_page_s_policies_stay_apart_once_each_is_kept(editor_client):
    PublishedArticleFactory(slug="the-article")
    for _ in range(2):  # the second time, both policies are the kept ones
        admin = _policy(editor_client.get("/admin/newsletter/article/add/"))
        reader = _policy(editor_client.get("/p/the-article/"))
        assert admin["script-src"] == ["'self'", "'unsafe-inline'"]
        assert reader["script-src"] == ["'self'"]


def test_a_changed_policy_setting_shows_at_once(client, settings):
    PublishedArticleFactory(slug="the-article")
    assert _policy(client.get("/p/the-article/"))["img-src"] == ["'self'", "https:", "data:"]
    settings.CONTENT_SECURITY_POLICY = {
        "DIRECTIVES": {**settings.CONTENT_SECURITY_POLICY["DIRECTIVES"], "img-src": ["'self'"]}
    }
    assert _policy(client.get("/p/the-article/?order=newest"))["img-src"] == ["'self'"]
