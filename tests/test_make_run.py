"""`make run` serves on PORT (8000 unless given), and says so."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.processes import ROOT


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PORT", "SITE_URL", "MAKEFLAGS")}


@pytest.mark.parametrize(
    ("env", "bind"), [({}, "127.0.0.1:8000"), ({"PORT": "8001"}, "127.0.0.1:8001")]
)
def test_the_development_web_process_binds_the_port_it_is_given(env, bind):
    line = next(
        line for line in (ROOT / "Procfile.dev").read_text().splitlines() if line.startswith("web:")
    )
    command = line.split(":", 1)[1].strip().replace("exec ", "echo ", 1)
    result = subprocess.run(
        ["sh", "-c", command], env={**_clean_env(), **env}, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert f"--bind {bind} " in result.stdout


@pytest.mark.parametrize(
    ("args", "port", "site_url"),
    [([], "8000", "unset"), (["PORT=8001"], "8001", "http://127.0.0.1:8001")],
)
def test_make_run_announces_and_starts_the_port_it_is_given(tmp_path: Path, args, port, site_url):
    # The recipe runs with stand-ins for the virtualenv's python and honcho: the first
    # does nothing, the second prints what it was started with.
    (tmp_path / "python").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "honcho").write_text(
        '#!/bin/sh\necho "honcho $* PORT=$PORT SITE_URL=${SITE_URL-unset}"\n'
    )
    for name in ("python", "honcho"):
        (tmp_path / name).chmod(0o755)
    result = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "run", f"BIN={tmp_path}", *args],
        cwd=ROOT, env=_clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"http://127.0.0.1:{port}/admin/" in result.stdout
    assert f"honcho start -f Procfile.dev -p {port} PORT={port} SITE_URL={site_url}" in (
        result.stdout
    )
