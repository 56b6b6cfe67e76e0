"""The tests' element finder: it must see exactly the element asked for, nested or not."""

from __future__ import annotations

import pytest

from tests.html import element, elements

PAGE = """<header><a href="/upgrade/">Upgrade</a></header>
<article><div class="article__body prose"><p>Free <em>part</em>.</p><div><hr>x</div></div>
<aside class="paywall-box" id="paywall"><h2>For paid subscribers</h2><br>
<a class="button" href="/upgrade/">Upgrade</a></aside></article>
<footer><a href="/upgrade/">Upgrade</a></footer>"""


def test_an_element_is_found_by_id_with_its_nested_markup_and_nothing_after_it():
    box = element(PAGE, id="paywall")
    assert box.startswith("<h2>For paid subscribers</h2><br>")
    assert box.endswith('<a class="button" href="/upgrade/">Upgrade</a>')
    assert "footer" not in box


def test_an_element_is_found_by_one_of_its_classes_and_nested_divs_do_not_end_it_early():
    assert element(PAGE, css_class="prose") == "<p>Free <em>part</em>.</p><div><hr>x</div>"


def test_a_missing_element_or_two_of_them_fail_the_assertion():
    assert elements(PAGE, id="comments") == []
    with pytest.raises(AssertionError):
        element(PAGE, id="comments")
    with pytest.raises(AssertionError):
        element(PAGE + PAGE, id="paywall")
