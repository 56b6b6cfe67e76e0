"""One address rule for every form a reader types an address into: the subscribe form,
sign-in by code and signup accept and refuse the same addresses, and store the same text."""

from __future__ import annotations

import pytest
from allauth.core import context
from django.core.cache import cache
from django.test import RequestFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from subscriptions.adapters import ReaderRequestLoginCodeForm, ReaderSignupForm
from subscriptions.forms import SubscribeForm
from subscriptions.services.addresses import InvalidAddress, normalize_email

pytestmark = pytest.mark.django_db

# Real-looking addresses, and the ways people mistype or decorate them.
typed_addresses = st.one_of(
    st.emails(),
    st.emails().map(str.upper),
    st.emails().map(lambda a: f"  {a} "),
    st.emails().map(lambda a: a.replace("@", "@@", 1)),
    st.emails().map(lambda a: a.rstrip(".") + "."),
    st.emails().map(lambda a: "x" * 300 + a),
    st.emails().map(lambda a: a.rsplit(".", 1)[0] + ".y"),
    st.text(min_size=1, max_size=40),
    st.sampled_from(["\u0131@example.com", "Ab@Bücher.de", "a@localhost", "a..b@example.com"]),
)


def accepted(form) -> str | None:
    with context.request_context(RequestFactory().post("/")):
        return form.cleaned_data["email"] if form.is_valid() else None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(address=typed_addresses)
def test_sign_in_signup_and_subscribe_take_the_same_addresses_in_the_same_form(address):
    cache.clear()  # allauth's limit of three codes a minute per address, between examples
    try:
        expected: str | None = normalize_email(address)
    except InvalidAddress:
        expected = None

    subscribe = accepted(SubscribeForm(data={"email": address}))
    sign_in = accepted(ReaderRequestLoginCodeForm(data={"email": address}))
    signup = accepted(ReaderSignupForm(data={"email": address}))

    assert subscribe == sign_in == signup == expected
