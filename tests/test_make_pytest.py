"""`make pytest` checks up front that the tests' PostgreSQL and Redis answer, and says
how to get them if not, before any test runs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ROOT


@pytest.fixture
def listening() -> Iterator[str]:
    """A port something listens on (all the probes ask of PostgreSQL and Redis)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield str(server.getsockname()[1])


@pytest.fixture
def closed() -> str:
    """A port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def make_pytest(tmp_path: Path, *, database_port: str, redis_url: str | None):
    # The virtualenv's pytest is a stand-in that says it ran; the probes use a python.
    (tmp_path / "python").symlink_to(sys.executable)
    (tmp_path / "pytest").write_text("#!/bin/sh\necho PYTEST-RAN\n")
    (tmp_path / "pytest").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("TEST_REDIS_URL", "MAKEFLAGS")}
    env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{database_port}/broadside"
    if redis_url is not None:
        env["TEST_REDIS_URL"] = redis_url
    return subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "-o", "chromium", "-o", "browser-checks",
         "pytest", f"BIN={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_without_redis_make_pytest_stops_and_says_how_to_start_it(tmp_path, listening, closed):
    result = make_pytest(tmp_path, database_port=listening, redis_url=f"redis://127.0.0.1:{closed}")

    assert result.returncode != 0
    assert "PYTEST-RAN" not in result.stdout
    assert f"Redis is not reachable at 127.0.0.1:{closed}" in result.stderr
    assert "redis-server" in result.stderr and "TEST_REDIS_URL" in result.stderr


def test_with_postgresql_and_redis_answering_make_pytest_runs_the_tests(tmp_path, listening):
    result = make_pytest(
        tmp_path, database_port=listening, redis_url=f"redis://127.0.0.1:{listening}/3"
    )

    assert result.returncode == 0, result.stderr
    assert "PYTEST-RAN" in result.stdout


def test_without_postgresql_make_pytest_stops_before_asking_for_redis(tmp_path, closed):
    result = make_pytest(tmp_path, database_port=closed, redis_url=None)

    assert result.returncode != 0
    assert f"PostgreSQL is not reachable at 127.0.0.1:{closed}" in result.stderr
    assert "PYTEST-RAN" not in result.stdout
