"""X-Forwarded-Proto is believed only behind a proxy, and gunicorn listens only locally."""

from __future__ import annotations

import os
import re

from tests import processes
from tests.processes import ROOT

SHOW = (
    "from django.conf import settings; from django.test import RequestFactory; "
    "r = RequestFactory().get('/', HTTP_X_FORWARDED_PROTO='https'); "
    "print(settings.SECURE_PROXY_SSL_HEADER, r.is_secure())"
)


def _settings_say(tmp_path, **env: str) -> str:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "ENV_FILE": "",
        "VAR_DIR": str(tmp_path),
        "SECRET_KEY": "x" * 50,
        "DEBUG": "false",
        "ALLOWED_HOSTS": "testserver",
    }
    result = processes.manage("shell", "-c", SHOW, env={**base, **env}, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_a_client_s_x_forwarded_proto_is_not_believed_by_default(tmp_path):
    assert _settings_say(tmp_path) == "None False"


def test_behind_a_proxy_its_x_forwarded_proto_is_believed(tmp_path):
    assert (
        _settings_say(tmp_path, BEHIND_PROXY="true") == "('HTTP_X_FORWARDED_PROTO', 'https') True"
    )


def test_the_procfile_binds_gunicorn_to_the_loopback_address_by_default():
    web = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    bind = re.search(r"--bind (\S+)", web)
    assert bind, web
    assert bind.group(1).startswith("${BIND_ADDRESS:-127.0.0.1}:"), web
