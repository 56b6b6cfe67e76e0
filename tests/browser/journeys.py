"""Small helpers the browser journeys share."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.browser.conftest import Site


def link_in(text: str, site: Site, path_prefix: str) -> str:
    """The first link in an email to this site whose path starts with `path_prefix`."""
    pattern = re.escape(site.url + path_prefix) + r"[^\s<>\"']+"
    match = re.search(pattern, text)
    assert match, f"no link to {path_prefix} in:\n{text}"
    return match.group(0)
