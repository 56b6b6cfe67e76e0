"""Which address rate limits count: the socket's peer, or the proxy's X-Forwarded-For entry.

Behind the same-machine TLS proxy every connection comes from 127.0.0.1; counting that
would let ten signups (or twenty failed admin sign-ins) lock out every visitor.
"""

from __future__ import annotations

import ipaddress

import pytest
from django.test import Client, RequestFactory, override_settings
from hypothesis import given
from hypothesis import strategies as st

from subscriptions.services.ratelimit import client_ip
from tests.factories import StaffUserFactory

pytestmark = pytest.mark.django_db

PROXY = "127.0.0.1"


def signup(client: Client, forwarded_for: str | None):
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    # Not an address: refused with 400 after the limit has counted it, nothing sent.
    return client.post(
        "/subscribe/", {"email": "not-an-address", "website": ""}, REMOTE_ADDR=PROXY,
        headers=headers,
    )  # fmt: skip


def test_behind_the_proxy_each_forwarded_client_has_its_own_signup_limit(client, settings):
    settings.BEHIND_PROXY = True
    for _ in range(10):
        assert signup(client, "203.0.113.7").status_code == 400
    assert signup(client, "203.0.113.7").status_code == 429
    assert signup(client, "198.51.100.20").status_code == 400


def test_a_client_cannot_dodge_the_limit_by_sending_its_own_x_forwarded_for(client, settings):
    settings.BEHIND_PROXY = True
    # The proxy appends the address it saw; whatever the client sent stays to its left.
    for n in range(10):
        assert signup(client, f"192.0.2.{n}, 203.0.113.7").status_code == 400
    assert signup(client, "192.0.2.99, 203.0.113.7").status_code == 429
    assert signup(client, "203.0.113.7").status_code == 429


def test_without_the_proxy_setting_x_forwarded_for_is_ignored(client, settings):
    settings.BEHIND_PROXY = False
    for n in range(10):
        assert signup(client, f"198.51.100.{n}").status_code == 400
    assert signup(client, "198.51.100.200").status_code == 429


def test_behind_the_proxy_failed_admin_sign_ins_from_one_client_do_not_lock_out_the_editor(
    client, settings
):
    settings.BEHIND_PROXY = True
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    editor = StaffUserFactory(username="ines")
    editor.set_password("a-long-editor-passphrase")
    editor.save()
    for n in range(25):
        client.post(
            "/admin/login/", {"username": f"someone-{n}", "password": "guess"},
            REMOTE_ADDR=PROXY, headers={"X-Forwarded-For": "203.0.113.66"},
        )  # fmt: skip
    attacker = client.post(
        "/admin/login/", {"username": "ines", "password": "a-long-editor-passphrase"},
        REMOTE_ADDR=PROXY, headers={"X-Forwarded-For": "203.0.113.66"},
    )  # fmt: skip
    assert attacker.status_code == 429

    response = Client().post(
        "/admin/login/", {"username": "ines", "password": "a-long-editor-passphrase"},
        REMOTE_ADDR=PROXY, headers={"X-Forwarded-For": "198.51.100.5"},
    )  # fmt: skip
    assert response.status_code == 302


@given(header=st.text(), remote=st.sampled_from(["127.0.0.1", "::1", ""]))
def test_any_x_forwarded_for_gives_an_ip_address_or_the_peer(header, remote):
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=header)
    with override_settings(BEHIND_PROXY=True):
        ip = client_ip(request)
    if ip != (remote or None):
        assert ip is not None
        ipaddress.ip_address(ip)
        assert ip == str(ipaddress.ip_address(header.split(",")[-1].strip()))


@given(header=st.text())
def test_junk_x_forwarded_for_never_breaks_a_signup(header):
    with override_settings(BEHIND_PROXY=True):
        response = Client().post(
            "/subscribe/", {"email": "not-an-address", "website": ""},
            REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=header,
        )  # fmt: skip
    assert response.status_code in (400, 429)
