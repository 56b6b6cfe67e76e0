"""Production settings pass Django's deployment checklist."""

from __future__ import annotations

import os
import re
import secrets
import subprocess

from tests import processes
from tests.processes import ROOT


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ENV_FILE": "", **env}
    return processes.manage(*args, env=env, timeout=120)


def _assert_deploy_check_is_clean(env: dict[str, str]) -> None:
    result = _manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNINGS" not in result.stdout + result.stderr


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    _assert_deploy_check_is_clean(
        {
            "HOME": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "SITE_URL": "https://news.example.com",
            "ALLOWED_HOSTS": "news.example.com",
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/broadside",
            "VAR_DIR": str(tmp_path / "var"),
        }
    )


def test_check_deploy_is_clean_with_env_example_filled_in(tmp_path):
    # What an operator gets by copying .env.example to .env and adding a secret key:
    # an empty line there overrides the setting's default, so it must be a safe one.
    example = (ROOT / ".env.example").read_text()
    values = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", example, re.M))
    _assert_deploy_check_is_clean(
        {
            **values,
            "HOME": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "VAR_DIR": str(tmp_path / "var"),
            "STATIC_ROOT": str(tmp_path / "static"),
            "MEDIA_ROOT": str(tmp_path / "media"),
        }
    )


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = _manage(
        "check",
        env={
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "false",
            "VAR_DIR": str(tmp_path / "var"),
        },
    )
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr


def test_the_settings_read_an_env_file_unless_env_file_is_empty(tmp_path):
    env_file = tmp_path / "broadside.env"
    env_file.write_text("TELEGRAM_CHAT_ID=@from_the_file\n")
    base = {
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "true",
        "VAR_DIR": str(tmp_path / "var"),
    }
    show = (
        "shell",
        "-v",
        "0",
        "-c",
        "from django.conf import settings; print(settings.TELEGRAM_CHAT_ID)",
    )

    read = _manage(*show, env={**base, "ENV_FILE": str(env_file)})
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == "@from_the_file"

    ignored = _manage(*show, env={**base, "ENV_FILE": ""})
    assert ignored.returncode == 0, ignored.stderr
    assert ignored.stdout.strip() == ""
    # This test run and the processes it starts read no .env either.
    assert os.environ["ENV_FILE"] == ""
