"""Sanitising article bodies and cutting them at the paywall."""

from __future__ import annotations

import pytest

from newsletter.models import Article
from newsletter.services.content import (
    PAYWALL_MARKER,
    excerpt,
    free_body,
    full_body,
    sanitize_body,
    split_at_paywall,
)


def test_script_tags_are_removed_with_their_content():
    cleaned = sanitize_body(html="<p>Hello</p><script>alert('x')</script>")
    assert cleaned == "<p>Hello</p>"


@pytest.mark.parametrize(
    "html",
    [
        '<p onclick="steal()">Text</p>',
        '<img src="https://example.com/a.png" onerror="steal()">',
        '<a href="https://example.com" onmouseover="steal()">link</a>',
    ],
)
def test_event_handlers_are_removed(html):
    cleaned = sanitize_body(html=html)
    assert "steal" not in cleaned
    assert " on" not in cleaned


@pytest.mark.parametrize(
    "href",
    ["javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:alert(1)", "data:text/html,x"],
)
def test_javascript_and_data_urls_are_removed(href):
    cleaned = sanitize_body(html=f'<a href="{href}">click</a>')
    assert "alert" not in cleaned
    assert "data:" not in cleaned
    assert ">click</a>" in cleaned


def test_iframes_styles_and_forms_are_removed():
    cleaned = sanitize_body(
        html='<iframe src="https://evil.example"></iframe><style>p{}</style>'
        '<form action="/x"><input name="a"></form><p style="color:red">Kept</p>'
    )
    assert cleaned == "<p>Kept</p>"


def test_article_markup_survives_sanitising():
    html = (
        "<h2>Heading</h2><p><strong>bold</strong> <em>it</em> "
        '<a href="https://example.com/x" title="t">link</a></p>'
        "<blockquote><p>quote</p></blockquote><ul><li>one</li></ul>"
        '<figure><img src="https://example.com/a.jpg" alt="A"><figcaption>Cap</figcaption></figure>'
    )
    cleaned = sanitize_body(html=html)
    for fragment in ("<h2>Heading</h2>", "<strong>bold</strong>", "<blockquote>", "<figcaption>"):
        assert fragment in cleaned
    assert 'rel="noopener noreferrer"' in cleaned


@pytest.mark.parametrize(
    "marker",
    [
        '<hr class="paywall">',
        "<hr class='paywall'>",
        '<hr class="paywall" id="x">',
        '<HR CLASS="paywall"/>',
    ],
)
def test_any_spelling_of_the_paywall_marker_is_normalised(marker):
    cleaned = sanitize_body(html=f"<p>free</p>{marker}<p>paid</p>")
    assert cleaned == f"<p>free</p>{PAYWALL_MARKER}<p>paid</p>"


def test_other_classes_on_rules_are_dropped():
    assert sanitize_body(html='<hr class="fancy">') == "<hr>"


def test_split_at_paywall_separates_free_and_paid_parts():
    assert split_at_paywall(html=f"<p>a</p>{PAYWALL_MARKER}<p>b</p>") == ("<p>a</p>", "<p>b</p>")
    assert split_at_paywall(html="<p>a</p>") == ("<p>a</p>", "")


def test_the_free_part_of_a_paid_article_stops_at_the_marker():
    article = Article(visibility="paid", body=f"<p>free</p>{PAYWALL_MARKER}<p>paid</p>")
    assert free_body(article=article) == "<p>free</p>"
    assert full_body(article=article) == "<p>free</p><p>paid</p>"


def test_a_marker_nested_in_a_quote_leaves_a_well_formed_free_part():
    article = Article(
        visibility="paid",
        body=f"<blockquote><p>free</p>{PAYWALL_MARKER}<p>paid</p></blockquote>",
    )
    assert free_body(article=article) == "<blockquote><p>free</p></blockquote>"


def test_a_paid_article_without_a_marker_has_no_free_part():
    article = Article(visibility="paid", subtitle="", body="<p>all paid</p>")
    assert free_body(article=article) == ""
    assert excerpt(article=article) == ""


def test_a_public_article_is_free_in_full_even_with_a_marker():
    article = Article(visibility="public", body=f"<p>a</p>{PAYWALL_MARKER}<p>b</p>")
    assert free_body(article=article) == "<p>a</p><p>b</p>"


def test_the_excerpt_prefers_the_subtitle_then_the_free_text():
    article = Article(
        visibility="paid", subtitle="", body=f"<p>Tom &amp; Jerry</p>{PAYWALL_MARKER}"
    )
    assert excerpt(article=article) == "Tom & Jerry"
    article.subtitle = "The subtitle"
    assert excerpt(article=article) == "The subtitle"


@pytest.mark.parametrize(
    "html",
    [
        '<p>PAID one</p><img src="https://x.example/a.png" alt=\'<hr class="paywall">\'>'
        "<p>PAID two</p>",
        "<p title='<hr class=\"paywall\">'>PAID one</p><p>PAID two</p>",
        '<p>PAID one &lt;hr class="paywall"&gt; PAID two</p>',
        '<a href="https://x.example/?q=<hr class=%22paywall%22>">PAID one</a><p>PAID two</p>',
        '<p>PAID one</p><!-- <hr class="paywall"> --><p>PAID two</p>',
        '<p>PAID one</p><textarea><hr class="paywall"></textarea><p>PAID two</p>',
    ],
)
def test_markup_that_only_looks_like_the_marker_gives_nothing_away(html):
    # Were any of these taken for the marker, the paid text before it would go free.
    article = Article(visibility="paid", subtitle="", body=sanitize_body(html=html))
    assert free_body(article=article) == ""
    assert excerpt(article=article) == ""


@pytest.mark.parametrize(
    "html",
    [
        '<table><tr><td>free<hr class="paywall">PAID</td></tr><tr><td>PAID</td></tr></table>',
        '<ul><li>free<hr class="paywall"></li><li>PAID</li></ul>',
        '<p><a href="https://x.example/">free<hr class="paywall">PAID</a></p>',
        '<p>free<hr class="paywall">PAID</p><p>PAID</p>',
        '<blockquote><p>free</p><hr class="paywall" title="x">PAID</blockquote>',
    ],
)
def test_a_nested_marker_keeps_everything_after_it_out_of_the_free_part(html):
    article = Article(visibility="paid", subtitle="", body=sanitize_body(html=html))
    free = free_body(article=article)
    assert "free" in free
    assert "PAID" not in free
    assert "PAID" in full_body(article=article)


# --- Exactly the markup an article needs, and the paywall marker in one spelling ----------


def test_layout_elements_outside_the_article_markup_are_unwrapped_to_their_text():
    cleaned = sanitize_body(
        html="<div><span>Kept</span></div><section><h1>Title</h1></section><nav>menu</nav>"
    )
    assert cleaned == "KeptTitlemenu"


def test_only_the_attributes_each_element_needs_are_kept():
    cleaned = sanitize_body(
        html='<p class="lead" id="intro" data-x="1">Bonjour</p>'
        '<img src="https://example.com/a.png" alt="A" class="wide" loading="lazy">'
        '<table><tr><td colspan="2" class="x" width="9">cell</td></tr></table>'
        '<a href="https://example.com/" target="_blank" title="T">link</a>'
    )
    assert cleaned == (
        "<p>Bonjour</p>"
        '<img src="https://example.com/a.png" alt="A">'
        '<table><tbody><tr><td colspan="2">cell</td></tr></tbody></table>'
        '<a href="https://example.com/" title="T" rel="noopener noreferrer">link</a>'
    )


@pytest.mark.parametrize(
    "href, kept",
    [
        ("https://example.com/", True),
        ("http://example.com/", True),
        ("mailto:editor@example.com", True),
        ("ftp://example.com/file", False),
        ("tel:+15550100", False),
        ("sms:+15550100", False),
        ("irc://example.com/chan", False),
    ],
)
def test_links_keep_only_web_and_mail_addresses(href, kept):
    cleaned = sanitize_body(html=f'<a href="{href}">link</a>')
    assert (f'href="{href}"' in cleaned) is kept
    assert cleaned.endswith(">link</a>")
    assert cleaned == (
        f'<a href="{href}" rel="noopener noreferrer">link</a>'
        if kept
        else '<a rel="noopener noreferrer">link</a>'
    )


def test_sanitising_keeps_the_text_and_is_stable_when_done_again():
    html = '<p>One &amp; two</p><hr class="paywall rule"><p>Three</p><hr class="fancy">'
    once = sanitize_body(html=html)
    assert once == f"<p>One &amp; two</p>{PAYWALL_MARKER}<p>Three</p><hr>"
    assert sanitize_body(html=once) == once


def test_split_at_paywall_cuts_at_the_first_marker_of_any_spelling():
    html = '<p>a</p><hr class="x paywall" id="m"><p>b</p><hr class="paywall"><p>c</p>'
    assert split_at_paywall(html=html) == (
        "<p>a</p>",
        '<p>b</p><hr class="paywall"><p>c</p>',
    )


def test_has_paywall_finds_any_spelling_of_the_marker_and_nothing_else():
    from newsletter.services.content import has_paywall

    assert has_paywall(html='<p>a</p><HR Class="Paywall">')
    assert has_paywall(html=PAYWALL_MARKER)
    assert not has_paywall(html='<p>a</p><hr class="paywalls"><hr>')
    assert not has_paywall(html="<p>paywall</p>")


def test_a_subscribers_only_article_is_cut_at_the_marker_like_a_paid_one():
    article = Article(visibility="subscribers", body=f"<p>free</p>{PAYWALL_MARKER}<p>later</p>")
    assert free_body(article=article) == "<p>free</p>"
    assert full_body(article=article) == "<p>free</p><p>later</p>"
    article.body = "<p>later</p>"
    assert free_body(article=article) == ""


def test_the_free_part_is_sanitised_again_after_the_cut():
    # Cut inside a list item, the free part would leave the list open.
    article = Article(
        visibility="paid", body=f"<ul><li>free</li><li>cut{PAYWALL_MARKER}paid</li></ul>"
    )
    assert free_body(article=article) == "<ul><li>free</li><li>cut</li></ul>"


def test_the_excerpt_is_the_first_forty_words_of_the_free_text():
    words = [f"w{n}" for n in range(60)]
    article = Article(
        visibility="paid",
        subtitle="   ",
        body=f"<p>{' '.join(words[:30])}</p>\n<p>{' '.join(words[30:])}</p>"
        f"{PAYWALL_MARKER}<p>x</p>",
    )
    assert excerpt(article=article) == " ".join(words[:40]) + "…"
    assert excerpt(article=article, words=3) == "w0 w1 w2…"
    short = Article(visibility="public", subtitle="", body="<p>Just   a\nfew words.</p>")
    assert excerpt(article=short) == "Just a few words."


def test_the_excerpt_uses_the_subtitle_without_its_surrounding_spaces():
    article = Article(visibility="paid", subtitle="  The subtitle \n", body="<p>body</p>")
    assert excerpt(article=article) == "The subtitle"
