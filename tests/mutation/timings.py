"""Where a `make mutate` run's time went: `python -m tests.mutation.timings <file>...`.

Reads the lines tests/mutation/plugin.py wrote with MUTATE_TIMINGS=<file> (one per test
run) and prints, for the mutants' runs, the CPU seconds per mutant (mean and median)
split into pytest's collection, the test database's setup and the tests themselves,
for killed and surviving mutants apart. CPU time, not wall time: on a shared machine
the wall time says more about the neighbours than about the run.
"""

from __future__ import annotations

import json
import statistics
import sys


def summary(lines: list[dict]) -> str:
    mutants = [line for line in lines if "__mutmut_" in line["mutant"]]
    if not mutants:
        return "No mutant runs in these files."
    out = [
        f"{len(mutants)} mutant runs (load average {min(m['load'] for m in mutants):.1f} to "
        f"{max(m['load'] for m in mutants):.1f})"
    ]
    out.append(
        "| runs | verdict | CPU s / mutant (mean, median) | pytest start | collection "
        "| database | tests | tests run |"
    )
    out.append("|---|---|---|---|---|---|---|---|")
    for verdict, group in (
        ("all", mutants),
        ("killed", [m for m in mutants if m["exit"] != 0]),
        ("survived", [m for m in mutants if m["exit"] == 0]),
    ):
        if not group:
            continue

        def mean(key: str, group: list[dict] = group) -> float:
            return statistics.fmean(m.get(key) or 0.0 for m in group)

        median = statistics.median(m["total_cpu"] for m in group)
        out.append(
            f"| {len(group)} | {verdict} | {mean('total_cpu'):.2f}, {median:.2f} "
            f"| {mean('startup_cpu'):.2f} "
            f"| {mean('collection_cpu'):.2f} "
            f"| {mean('database_cpu'):.2f} | {mean('tests_cpu'):.2f} | {mean('tests'):.1f} |"
        )
    return "\n".join(out)


def main(paths: list[str]) -> int:
    lines = []
    for path in paths:
        with open(path) as handle:
            lines += [json.loads(line) for line in handle if line.strip()]
    for line in lines:  # lines of a plugin that did not record the start yet
        line.setdefault("total_cpu", line["cpu"])
    print(summary(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
