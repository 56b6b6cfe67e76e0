"""The score of a `make mutate` run, one line per module: `python -m tests.mutation.score`.

Reads the results mutmut left in mutants/ and counts, per mutated module, the mutants
the tests killed (a timeout counts as killed: the change made the code hang), the ones
mypy rejected before any test ran (`type_check_command` in pyproject.toml: such a
mutant fails `make test`'s type check), the ones that survived, and the ones no test
reached. Mutants listed in tests/mutation/survivors.md as
equivalent (they cannot change what the code does; each entry says why) are left out
of the score, if the mutant is still the one listed (its fingerprint matches, see
tests/mutation/equivalents.py); a listed mutant that has changed since counts as
surviving until someone checks it again.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from tests.mutation import equivalents

ROOT = Path(__file__).resolve().parents[2]
TYPE_CHECKED = {37}
# -9: the hard CPU limit's SIGKILL (mutmut's label is "segfault"), when the CPU limit's
# SIGXCPU found the main thread blocked in a call: a mutant that spun, so a timeout.
KILLED = {1, 3, 24, -24, -9, 36, 152, 255} | TYPE_CHECKED
SURVIVED = {0}
NO_TESTS = {5, 33}


def equivalent_mutants() -> set[str]:
    """The mutants survivors.md lists that are still the change listed."""
    entries = equivalents.listed()
    tree = ROOT / "mutants"
    current = {name for name in entries if equivalents.unchanged(name, tree, entries)}
    for name in sorted(set(entries) - current):
        print(
            f"{name} is listed without its current fingerprint: check it, then run "
            "`python -m tests.mutation.equivalents`",
            file=sys.stderr,
        )
    return current


def main() -> int:
    metas = sorted((ROOT / "mutants").glob("**/*.py.meta"))
    if not metas:
        print("No results in mutants/: run `make mutate` first.", file=sys.stderr)
        return 1
    equivalent = equivalent_mutants()
    rows = []
    for meta in metas:
        module = str(meta.relative_to(ROOT / "mutants"))[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts: Counter[str] = Counter()
        survivors = []
        for name, code in codes.items():
            if name in equivalent and code in SURVIVED:
                counts["equivalent"] += 1
            elif name in equivalent and code in KILLED:
                # Listed, but killed (or renumbered by an edit): the list needs updating.
                print(f"{name} is listed as equivalent but was killed", file=sys.stderr)
                counts["killed"] += 1
            elif code is None:
                counts["not checked"] += 1
            elif code in KILLED:
                counts["killed"] += 1
                if code in TYPE_CHECKED:
                    counts["by mypy"] += 1
            elif code in SURVIVED:
                counts["survived"] += 1
                survivors.append(name)
            elif code in NO_TESTS:
                counts["no tests"] += 1
                survivors.append(name)
            else:
                counts["other"] += 1
                survivors.append(name)
        scored = counts["killed"] + counts["survived"] + counts["no tests"] + counts["other"]
        if not scored and not counts["equivalent"]:
            continue  # not in this run (MUTANTS)
        if counts["not checked"]:
            print(f"{module}: {counts['not checked']} mutants not checked yet", file=sys.stderr)
        rows.append((module, counts, scored, survivors))
    print("| module | mutants | killed | of which by mypy | survived | equivalent | score |")
    print("|---|---|---|---|---|---|---|")
    for module, counts, scored, _survivors in rows:
        score = f"{100 * counts['killed'] / scored:.1f}%" if scored else "-"
        left = counts["survived"] + counts["no tests"] + counts["other"]
        print(
            f"| `{module}` | {scored + counts['equivalent']} | {counts['killed']} "
            f"| {counts['by mypy']} | {left} "
            f"| {counts['equivalent']} | {score} |"
        )
    if len(rows) > 1:
        total: Counter[str] = sum((counts for _m, counts, _s, _v in rows), Counter())
        scored = sum(scored for _m, _c, scored, _v in rows)
        left = total["survived"] + total["no tests"] + total["other"]
        score = f"{100 * total['killed'] / scored:.1f}%" if scored else "-"
        print(
            f"| all | {scored + total['equivalent']} | {total['killed']} | {total['by mypy']} "
            f"| {left} | {total['equivalent']} | {score} |"
        )
    if "-v" in sys.argv:
        for module, _counts, _scored, survivors in rows:
            for name in sorted(survivors):
                print(f"survived: {name}  ({module})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
