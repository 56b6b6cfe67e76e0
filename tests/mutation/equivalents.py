"""The equivalent mutants survivors.md lists, and whether each is still the one listed.

Each entry may carry a fingerprint of its mutant, "- `<name>` (<fingerprint>)": the
first twelve hex digits of the SHA-256 of the mutated function's source as mutmut wrote
it in mutants/. The function's source holds the original code around the change, so
an edit of the function (which also renumbers its mutants) changes the fingerprint.

A mutant whose entry's fingerprint matches is the very change someone judged unable to
alter behaviour: `make mutate` does not run its tests again (tests/mutation/plugin.py;
`MUTATE_RECHECK=1` runs them all). One whose fingerprint differs, or that has none, runs
like any other, and the score counts it as surviving, not as equivalent, until someone
checks it and refreshes the fingerprints:

    python -m tests.mutation.equivalents    # after a `make mutate`

writes the current fingerprint into every entry whose mutant survived the last run, and
names the entries it cannot vouch for (killed, not run, or no longer there).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SURVIVORS = ROOT / "tests" / "mutation" / "survivors.md"
ENTRY = re.compile(r"^- `([\w.]+__mutmut_\d+)`(?: \(([0-9a-f]{12})\))?", flags=re.MULTILINE)


def listed(text: str | None = None) -> dict[str, str | None]:
    """Each listed mutant's name and the fingerprint its entry carries (or None)."""
    if text is None:
        text = SURVIVORS.read_text()
    return {name: fingerprint or None for name, fingerprint in ENTRY.findall(text)}


def _source_file(name: str, tree: Path) -> tuple[Path, str] | None:
    """The mutated file in `tree` that holds mutant `name`, and the mutant's function name."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        path = tree.joinpath(*parts[:cut]).with_suffix(".py")
        if path.is_file():
            return path, ".".join(parts[cut:])
    return None


@cache
def _functions(path: Path) -> dict[str, str]:
    """The source of each mutant function in `path`, as `ast.get_source_segment` gives
    it, from one split of the file (that function splits the whole file at each call,
    which for a module of 400 mutants took half a minute, in every mutant's run)."""
    source = path.read_text()
    lines = source.split("\n")
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "__mutmut_" in node.name:
            found[node.name] = _segment(lines, node)
    return found


def _segment(lines: list[str], node: ast.stmt) -> str:
    # Offsets are in UTF-8 bytes, as in `ast.get_source_segment`.
    first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
    start, end = node.col_offset, node.end_col_offset
    if first == last:
        return lines[first].encode()[start:end].decode()
    head = lines[first].encode()[start:].decode()
    tail = lines[last].encode()[:end].decode()
    return "\n".join([head, *lines[first + 1 : last], tail])


def fingerprint(name: str, tree: Path) -> str | None:
    """The fingerprint of mutant `name` as mutmut wrote it in `tree` (mutants/), or None."""
    located = _source_file(name, tree)
    if located is None:
        return None
    path, function = located
    source = _functions(path).get(function)
    if source is None:
        return None
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def unchanged(name: str, tree: Path, entries: dict[str, str | None]) -> bool:
    """Whether `name` is listed with the fingerprint its mutant has now."""
    recorded = entries.get(name)
    return recorded is not None and recorded == fingerprint(name, tree)


def last_verdicts(tree: Path) -> dict[str, int | None]:
    verdicts: dict[str, int | None] = {}
    for meta in tree.glob("**/*.py.meta"):
        verdicts.update(json.loads(meta.read_text())["exit_code_by_key"])
    return verdicts


def refresh(text: str, tree: Path, verdicts: dict[str, int | None]) -> tuple[str, list[str]]:
    """`text` with the current fingerprint on every entry whose mutant survived."""
    problems = []

    def entry(match: re.Match[str]) -> str:
        name = match.group(1)
        current = fingerprint(name, tree)
        verdict = verdicts.get(name)
        if current is None:
            problems.append(f"{name}: no such mutant now (renumbered or gone)")
        elif verdict != 0:
            state = "not run" if verdict is None else f"not surviving (exit {verdict})"
            problems.append(f"{name}: {state} in the last run")
        else:
            return f"- `{name}` ({current})"
        return match.group(0)

    return ENTRY.sub(entry, text), problems


def main() -> int:
    tree = ROOT / "mutants"
    if not any(tree.glob("**/*.py.meta")):
        print("No results in mutants/: run `make mutate` first.", file=sys.stderr)
        return 1
    text, problems = refresh(SURVIVORS.read_text(), tree, last_verdicts(tree))
    SURVIVORS.write_text(text)
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
