"""The editors' sign-in: throttled, and two-factor (TOTP, recovery codes) for staff."""

from __future__ import annotations

import base64
import hmac
import os
import struct
import time

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.core.cache import cache
from django.test import Client

from tests import processes
from tests.factories import StaffUserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-editor-passphrase"


def totp_code(secret: str, *, at: float | None = None) -> str:
    """RFC 6238 (SHA-1, 30 s, 6 digits), as authenticator apps compute it."""
    counter = int((time.time() if at is None else at) // 30)
    digest = hmac.new(base64.b32decode(secret), struct.pack(">Q", counter), "sha1").digest()
    offset = digest[-1] & 0x0F
    value = (struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{value:06d}"


@pytest.fixture(autouse=True)
def _quick_password_hashing(settings):
    # Each attempt hashes a password (even for an unknown username); the real hasher's
    # work factor would make the dozens of attempts below take most of a minute.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def editor(_quick_password_hashing):
    user = StaffUserFactory(username="ines", email="ines@example.com")
    user.set_password(PASSWORD)
    user.save()
    return user


def sign_in(client: Client, *, username: str = "ines", password: str = PASSWORD, code: str = ""):
    return client.post(
        "/admin/login/?next=/admin/",
        {"username": username, "password": password, "code": code},
        REMOTE_ADDR="198.51.100.7",
    )


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_forty_wrong_passwords_then_the_right_one_is_refused(client, editor):
    for attempt in range(40):
        response = sign_in(client, password=f"guess-{attempt}")
        assert response.status_code in (200, 429)
    response = sign_in(client)

    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.content.decode()
    assert not signed_in(client)
    # From another address too: the username itself is locked.
    other = Client()
    assert (
        other.post(
            "/admin/login/", {"username": "ines", "password": PASSWORD}, REMOTE_ADDR="192.0.2.1"
        ).status_code
        == 429
    )
    # Once the window has passed (the counters expire), the right password works.
    cache.clear()
    assert sign_in(client).status_code == 302
    assert signed_in(client)


def test_a_few_mistakes_do_not_lock_the_editor_out(client, editor):
    for attempt in range(4):
        sign_in(client, password=f"typo-{attempt}")
    assert sign_in(client).status_code == 302


def test_one_address_trying_many_usernames_is_locked_out(client, editor):
    for n in range(20):
        sign_in(client, username=f"someone-{n}", password="guess")
    assert sign_in(client).status_code == 429


def test_staff_without_two_factor_in_production_set_it_up_before_the_admin_opens(
    client, editor, settings
):
    settings.STAFF_MFA_REQUIRED = True
    assert sign_in(client).status_code == 302

    blocked = client.get("/admin/")
    assert blocked.status_code == 302
    assert blocked["Location"].startswith("/accounts/2fa/totp/activate/")
    assert client.get("/admin/newsletter/article/").status_code == 302

    page = client.get(blocked["Location"])
    assert page.status_code == 200, page.get("Location")
    secret = client.session["mfa.totp.secret"]
    activated = client.post("/accounts/2fa/totp/activate/", {"code": totp_code(secret)})
    assert activated.status_code == 302
    assert Authenticator.objects.filter(user=editor, type=Authenticator.Type.TOTP).exists()
    assert Authenticator.objects.filter(
        user=editor, type=Authenticator.Type.RECOVERY_CODES
    ).exists()

    assert client.get("/admin/").status_code == 200


def test_two_factor_is_required_by_default_when_debug_is_off(tmp_path):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "ENV_FILE": "",
        "VAR_DIR": str(tmp_path),
        "SECRET_KEY": "x" * 50,
    }
    code = "from django.conf import settings; print(settings.STAFF_MFA_REQUIRED)"
    production = processes.manage("shell", "-c", code, env={**env, "DEBUG": "false"}, timeout=60)
    development = processes.manage("shell", "-c", code, env={**env, "DEBUG": "true"}, timeout=60)
    assert production.stdout.split()[-1:] == ["True"], production.stderr
    assert development.stdout.split()[-1:] == ["False"], development.stderr


@pytest.fixture
def editor_with_totp(editor):
    secret = generate_totp_secret()
    TOTP.activate(editor, secret)
    codes = RecoveryCodes.activate(editor).generate_codes()
    return editor, secret, codes


def test_staff_with_an_authenticator_sign_in_only_with_its_current_code(client, editor_with_totp):
    _, secret, _ = editor_with_totp
    assert 'name="code"' in client.get("/admin/login/").content.decode()

    without = sign_in(client)
    assert without.status_code == 200
    assert "the code from your authenticator app" in without.content.decode()
    assert not signed_in(client)
    stale = totp_code(secret, at=time.time() - 300)
    assert sign_in(client, code=stale).status_code == 200
    assert not signed_in(client)

    assert sign_in(client, code=totp_code(secret)).status_code == 302
    assert signed_in(client)
    assert (
        Client()
        .post("/admin/login/", {"username": "ines", "password": "wrong", "code": totp_code(secret)})
        .status_code
        == 200
    )


def _errors(response) -> list[str]:
    return response.context["form"].non_field_errors()


def test_a_failed_sign_in_does_not_say_whether_the_password_was_right(editor_with_totp):
    _, secret, _ = editor_with_totp
    stale = totp_code(secret, at=time.time() - 300)
    wrong_password = sign_in(Client(), password="a-guess", code=totp_code(secret))
    no_code = sign_in(Client())
    wrong_code = sign_in(Client(), code=stale)
    junk_code = sign_in(Client(), code="not-a-code")

    assert wrong_password.status_code == 200
    for response in (no_code, wrong_code, junk_code):
        assert response.status_code == 200
        assert _errors(response) == _errors(wrong_password)
        assert [f.errors for f in response.context["form"]] == [
            f.errors for f in wrong_password.context["form"]
        ]


def test_a_recovery_code_signs_in_once(editor_with_totp):
    _, _, codes = editor_with_totp
    first = Client()
    assert sign_in(first, code=codes[0]).status_code == 302
    again = Client()
    assert sign_in(again, code=codes[0]).status_code == 200
    assert not signed_in(again)


def test_an_emailed_sign_in_code_does_not_skip_the_authenticator(client, editor_with_totp):
    from allauth.account.models import EmailAddress
    from django.core import mail

    EmailAddress.objects.create(
        user=editor_with_totp[0], email="ines@example.com", verified=True, primary=True
    )
    client.post("/accounts/login/code/", {"email": "ines@example.com"})
    code = mail.outbox[-1].body.split("\n")
    entered = next(line.strip() for line in code if len(line.strip()) == 9 and "-" in line)
    response = client.post("/accounts/login/code/confirm/", {"code": entered})

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/2fa/authenticate/")
    assert not signed_in(client)


def test_a_new_admin_from_ensure_admin_can_set_up_two_factor_and_open_the_admin(
    client, settings, tmp_path
):
    from io import StringIO

    from allauth.account.models import EmailAddress
    from django.core.management import call_command

    settings.VAR_DIR = tmp_path
    settings.STAFF_MFA_REQUIRED = True
    out = StringIO()
    call_command("ensure_admin", "--email", "Chief.Editor@example.com", stdout=out)
    password = out.getvalue().split("password: ")[1].split()[0]
    assert (
        client.post(
            "/admin/login/?next=/admin/", {"username": "admin", "password": password}
        ).status_code
        == 302
    )
    # Opening allauth's address page (a natural first step) leaves nothing unverified.
    assert client.get("/accounts/email/").status_code == 200
    assert list(EmailAddress.objects.values_list("email", "verified", "primary")) == [
        ("chief.editor@example.com", True, True)
    ]

    blocked = client.get("/admin/")
    assert blocked["Location"].startswith("/accounts/2fa/totp/activate/")
    assert client.get(blocked["Location"]).status_code == 200
    secret = client.session["mfa.totp.secret"]
    activated = client.post("/accounts/2fa/totp/activate/", {"code": totp_code(secret)})
    assert activated.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_staff_with_an_unverified_address_are_sent_to_their_addresses_not_round_in_a_loop(
    client, editor, settings
):
    from allauth.account.models import EmailAddress

    settings.STAFF_MFA_REQUIRED = True
    EmailAddress.objects.create(user=editor, email=editor.email, verified=False, primary=True)
    assert sign_in(client).status_code == 302

    response = client.get("/admin/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/email/")
    page = client.get(response["Location"])
    assert page.status_code == 200
    assert "Verify or remove your unverified email address" in page.content.decode()
