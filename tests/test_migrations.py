"""Migrations match the models and build the schema on the embedded default (SQLite)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests import processes


def _manage(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "true",
        "VAR_DIR": str(tmp_path / "var"),
        "ENV_FILE": "",  # a developer's .env could point migrate and seed_demo elsewhere
    }
    return processes.manage(*args, env=env, timeout=180)


def test_the_migrations_describe_the_models_exactly(tmp_path):
    result = _manage("makemigrations", "--check", "--dry-run", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_runs_database_is_built_by_the_migrations_and_takes_the_demo(tmp_path):
    migrated = _manage("migrate", "--noinput", tmp_path=tmp_path)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    seeded = _manage("seed_demo", tmp_path=tmp_path)
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    assert (tmp_path / "var" / "broadside.sqlite3").exists()
