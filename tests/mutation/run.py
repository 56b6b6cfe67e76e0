"""`make mutate` runs mutmut through this module: `python -m tests.mutation.run run ...`.

It is mutmut's own command line with two parts made faster and nothing else changed:

- After mypy has checked the mutants, mutmut finds the mutant function each of mypy's
  reports falls in by parsing every reported file with libcst and its position
  metadata, which took about a minute and a half of a run on the 2-core machine (the
  mutated files hold a copy of each function per mutant: up to 27,000 lines). Python's
  own parser gives the same functions and the same first and last lines in a few
  seconds; test_run.py compares the two on the mutants of real modules.
- mutmut's fork server imports Django, the project and every test module (its warm-up)
  and forks one process per mutant from there, but it freezes the garbage collector's
  objects (`gc.freeze()`) before that warm-up, not after. Each mutant's process then
  walked all of the warm-up's objects at its first full collection (pytest runs one as
  it ends), which also copied the memory they sit in: the fork server now freezes them
  once its warm-up is done. A frozen object is only never freed, and a mutant's process
  lives for one run.
- mutmut's stats pass (every test once, to learn which tests reach which function and
  how long each takes) runs in one process: almost five minutes here, half of it spent
  waiting on locks, sockets and threads. It now runs in MUTATE_STATS_PARTS processes
  side by side (default: one per core), each on its share of the test files (shared
  out by size), each with its own test database slot; what they learnt is merged just
  as mutmut merges its one process's.
- From the stats pass's record of which test ran which line (tests/mutation/plugin.py),
  each mutant's tests are narrowed to those that ran the statement it changes
  (`line_tests`): written to LINE_TESTS_FILE after the stats pass, loaded by the fork
  server after its warm-up.
"""

from __future__ import annotations

import ast
import difflib
import gc
import json
import os
from collections import defaultdict
from pathlib import Path

import mutmut.__main__ as mutmut_main
from mutmut.configuration import config
from mutmut.models.results import StatsResult
from mutmut.mutation.file_mutation import FailedTypeCheckMutant, MutatedMethodLocation
from mutmut.runners.harness import PytestRunner
from mutmut.state import state
from mutmut.type_checking import TypeCheckingError, run_type_checker
from mutmut.utils.file_utils import change_cwd
from mutmut.utils.format_utils import get_mutant_name, is_mutated_method_name
from mutmut.workers.isolation import ForkServerRunner


def mutated_functions(path: Path, source: str) -> list[MutatedMethodLocation]:
    """The mutant functions of a file mutmut wrote, each from its `def` line (not its
    decorators: libcst's positions start there too) to its last line.

    Like mutmut's libcst visitor, this looks into classes and into statements at module
    or class level, never into a function: mutmut writes no mutant inside another.
    """
    found: list[MutatedMethodLocation] = []

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if is_mutated_method_name(node.name):
                    found.append(
                        MutatedMethodLocation(
                            file=path,
                            function_name=node.name,
                            line_number_start=node.lineno,
                            line_number_end=node.end_lineno or node.lineno,
                        )
                    )
                continue
            if isinstance(node, ast.ClassDef):
                visit(node.body)
                continue
            for field in ("body", "orelse", "finalbody"):
                visit(getattr(node, field, None) or [])
            for handler in getattr(node, "handlers", None) or []:
                visit(handler.body)
            for case in getattr(node, "cases", None) or []:
                visit(case.body)

    visit(ast.parse(source).body)
    return found


def caught_by_the_type_checker() -> dict[str, FailedTypeCheckMutant]:
    """What mutmut's `filter_mutants_with_type_checker` returns, found with `ast`."""
    with change_cwd(Path("mutants")):
        errors = run_type_checker(config().type_check_command)
        by_path: dict[Path, list[TypeCheckingError]] = defaultdict(list)
        for error in errors:
            by_path[error.file_path].append(error)

        caught: dict[str, FailedTypeCheckMutant] = {}
        for path, errors_of_file in by_path.items():
            functions = mutated_functions(path, path.read_text(encoding="utf-8"))
            if not functions:
                continue
            for error in errors_of_file:
                function = next(
                    (
                        f
                        for f in functions
                        if f.line_number_start <= error.line_number <= f.line_number_end
                    ),
                    None,
                )
                if function is None:
                    raise RuntimeError(
                        f"mypy reports {path}:{error.line_number} ({error.error_description}) "
                        "outside every mutant function: the unchanged code does not type-check "
                        "(run `make typecheck`), or a mutant changed types beyond its function."
                    )
                relative = path.relative_to(Path(".").absolute())
                name = get_mutant_name(relative, function.function_name)
                caught[name] = FailedTypeCheckMutant(
                    method_location=function, name=name, error=error
                )
        return caught


# In mutants/: for each mutant, the tests that ran the statement it changes.
LINE_TESTS_FILE = "mutmut-line-tests.json"


def statement_spans(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[set[int]]:
    """The lines of each statement of `function`: a simple statement whole, a compound
    one (`if`, `for`, `with`, ...) its header down to its body, a nested function or
    class its def line."""
    spans = []
    for node in ast.walk(function):
        if not isinstance(node, ast.stmt) or node is function:
            continue
        body = getattr(node, "body", None)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            last = node.lineno
        elif isinstance(body, list) and body:
            last = body[0].lineno - 1
        else:
            last = node.end_lineno or node.lineno
        spans.append(set(range(node.lineno, last + 1)))
    return spans


def _original_functions(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """mutmut's copies of the original functions (`..._mutmut_orig`), by that name."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.endswith(
            "__mutmut_orig"
        ):
            found[node.name] = node
    return found


def changed_lines(
    lines: list[str], mutant: MutatedMethodLocation, original: MutatedMethodLocation
) -> set[int]:
    """The lines, in the file, of the original function that `mutant` changes (the line
    after which it adds, where it only adds)."""
    mutant_lines = lines[mutant.line_number_start - 1 : mutant.line_number_end]
    original_lines = lines[original.line_number_start - 1 : original.line_number_end]
    # Each def line names its own function: compare the rest of it.
    mutant_lines[0] = mutant_lines[0].replace(mutant.function_name, original.function_name, 1)
    changed: set[int] = set()
    matcher = difflib.SequenceMatcher(a=original_lines, b=mutant_lines, autojunk=False)
    for tag, i1, i2, _j1, _j2 in matcher.get_opcodes():
        if tag != "equal":
            first = original.line_number_start + i1
            changed |= set(range(first, max(original.line_number_start + i2, first + 1)))
    return changed


def line_tests(source: str, path: Path, lines_run_by: dict[int, set[str]]) -> dict[str, list[str]]:
    """For each mutant of the file mutmut wrote at `path`, the tests that ran a line of
    a statement it changes in the original function (`lines_run_by`: line -> tests).
    A mutant whose statements no test ran is left out: it runs every test that reaches
    its function."""
    functions = mutated_functions(path, source)
    originals = {
        f.function_name.removesuffix("__mutmut_orig"): f
        for f in functions
        if f.function_name.endswith("__mutmut_orig")
    }
    nodes = _original_functions(ast.parse(source))
    spans = {
        base: statement_spans(nodes[original.function_name])
        for base, original in originals.items()
        if original.function_name in nodes
    }
    lines = source.splitlines()
    relative = path.relative_to(Path(".").absolute())
    found: dict[str, list[str]] = {}
    for function in functions:
        base, _, number = function.function_name.rpartition("__mutmut_")
        if not number.isdigit() or base not in spans:
            continue
        changed = changed_lines(lines, function, originals[base])
        statements = set(changed)
        for span in spans[base]:
            if span & changed:
                statements |= span
        tests: set[str] = set()
        for line in statements:
            tests |= lines_run_by.get(line, set())
        tests.discard("")  # the import's own context: not a test
        if tests:
            found[get_mutant_name(relative, function.function_name)] = sorted(tests)
    return found


def write_line_tests(parts: int) -> None:
    """LINE_TESTS_FILE from the stats pass's coverage data files (in mutants/)."""
    from coverage import CoverageData

    from tests.mutation import plugin

    lines_run_by: dict[str, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for part in range(parts):
        data = CoverageData(basename=f"{plugin.LINES}.{part}")
        data.read()
        for filename in data.measured_files():
            for line, contexts in data.contexts_by_lineno(filename).items():
                lines_run_by[filename][line] |= set(contexts)
    found: dict[str, list[str]] = {}
    for filename, by_line in lines_run_by.items():
        path = Path(filename)
        found |= line_tests(path.read_text(encoding="utf-8"), path, by_line)
    with open(LINE_TESTS_FILE, "w") as out:
        json.dump(found, out)


_warm_up = PytestRunner.warm_up


def warm_up_then_freeze(self: PytestRunner) -> None:
    _warm_up(self)
    from tests.mutation import plugin

    try:
        with open(Path("mutants") / LINE_TESTS_FILE) as record:
            plugin.LINE_TESTS.update({m: frozenset(t) for m, t in json.load(record).items()})
    except FileNotFoundError:  # stats reused from an earlier run: whole functions
        pass
    gc.collect()
    gc.freeze()


def test_files(selection: list[str], ignored: list[str]) -> list[str]:
    """The test files under the selected paths (pytest's `test_*.py`), less the ignored
    ones (a file, or everything under a directory)."""
    found: set[str] = set()
    for path in map(Path, selection):
        candidates = [path] if path.is_file() else path.rglob("test_*.py")
        found |= {str(file) for file in candidates}
    return sorted(
        file
        for file in found
        if not any(
            file == ignore or file.startswith(ignore.rstrip("/") + "/") for ignore in ignored
        )
    )


def shared_out(files: list[str], parts: int, size=os.path.getsize) -> list[list[str]]:
    """`files` in `parts` groups of about the same size (each file, largest first, to
    the lightest group so far); each group in the files' own order, empty ones left out."""
    groups: list[list[str]] = [[] for _ in range(max(parts, 1))]
    weights = [0] * len(groups)
    for file in sorted(files, key=lambda f: (-size(f), f)):
        lightest = weights.index(min(weights))
        groups[lightest].append(file)
        weights[lightest] += size(file)
    return [sorted(group) for group in groups if group]


def _ignored(cli_args: list[str]) -> list[str]:
    return [arg.removeprefix("--ignore=") for arg in cli_args if arg.startswith("--ignore=")]


_collect_stats = ForkServerRunner.collect_stats


def collect_stats_in_parts(self: ForkServerRunner, tests: object) -> int:
    """mutmut's stats pass, in parts side by side (see the module's docstring)."""
    from tests.mutation import plugin  # imports pytest: not before mutmut's own children do

    parts = int(os.environ.get("MUTATE_STATS_PARTS") or os.cpu_count() or 1)
    if tests or parts < 2:  # a run that adds new tests to earlier stats: mutmut's own
        return _collect_stats(self, tests)  # type: ignore[arg-type]
    with change_cwd(Path("mutants")):
        groups = shared_out(
            test_files(
                config().pytest_add_cli_args_test_selection, _ignored(config().pytest_add_cli_args)
            ),
            parts,
        )
    children = [_start_stats_part(self, number, group) for number, group in enumerate(groups)]
    results = [_finish_stats_part(pid, read_end) for pid, read_end in children]
    for result in results:
        for function, reaching in result.tests_by_mangled_function_name.items():
            state().tests_by_mangled_function_name[function] |= reaching
        state().duration_by_test.update(result.duration_by_test)
        for function, callees in result.function_dependencies.items():
            state().function_dependencies[function] = callees
    state().stats_time = sum(result.stats_time for result in results)
    with change_cwd(Path("mutants")):
        plugin.join_the_stats_parts_passed(len(groups))
        write_line_tests(len(groups))
    return next((result.exit_code for result in results if result.exit_code), 0)


def _start_stats_part(runner: ForkServerRunner, number: int, files: list[str]) -> tuple[int, int]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child: its result goes to the pipe)
        os.close(read_end)
        status = 1
        try:
            from tests.mutation import plugin

            os.environ[plugin.STATS_PART] = str(number)
            child = runner.test_runner_class(**runner.test_runner_args)
            exit_code = child.run_stats(tests=files)
            result = StatsResult(
                exit_code=exit_code,
                tests_by_mangled_function_name=dict(state().tests_by_mangled_function_name),
                duration_by_test=dict(state().duration_by_test),
                stats_time=state().stats_time or 0.0,
                function_dependencies=dict(state().function_dependencies),
            )
            with os.fdopen(write_end, "w") as out:
                json.dump(result.to_dict(), out)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end


def _finish_stats_part(pid: int, read_end: int) -> StatsResult:
    # Read before waiting: a result larger than the pipe's buffer holds the child until
    # it is read.
    with os.fdopen(read_end) as result:
        try:
            data = json.load(result)
        except ValueError:  # nothing written: the child failed
            data = None
    _pid, status = os.waitpid(pid, 0)
    if data is None or os.waitstatus_to_exitcode(status) != 0:
        raise ChildProcessError(f"a part of the stats pass ended with status {status}")
    return StatsResult.from_dict(data)


def main() -> None:
    mutmut_main.filter_mutants_with_type_checker = caught_by_the_type_checker
    PytestRunner.warm_up = warm_up_then_freeze  # type: ignore[method-assign]
    ForkServerRunner.collect_stats = collect_stats_in_parts  # type: ignore[method-assign]
    mutmut_main.cli()


if __name__ == "__main__":
    main()
