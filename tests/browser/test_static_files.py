"""The stack's static files are served whole: whitenoise scans STATIC_ROOT as gunicorn
loads the app, so a file still being written at that moment would be served short for
the stack's whole life (the harness starts gunicorn once collectstatic is done)."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from tests.browser.conftest import Site

pytestmark = pytest.mark.browser


def test_every_static_file_a_page_links_is_served_whole_by_each_web_process(site: Site):
    with urllib.request.urlopen(f"{site.url}/") as response:
        html = response.read().decode()
    paths = sorted(set(re.findall(r'(?:href|src)="(/static/[^"]+)"', html)))
    assert any(path.endswith(".css") for path in paths), paths
    root = Path(site.stack.env["STATIC_ROOT"])
    for path in paths:
        on_disk = (root / path.removeprefix("/static/")).read_bytes()
        assert on_disk, path
        # Several requests, so both gunicorn processes (each with its own scan) answer.
        for _ in range(8):
            with urllib.request.urlopen(f"{site.url}{path}") as response:
                assert response.read() == on_disk, path
