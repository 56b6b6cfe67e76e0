"""`make mutate` finds the mutant mypy rejects as mutmut itself would, only faster."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import libcst as cst
import pytest
from mutmut.mutation.file_mutation import MutatedMethodsCollector, mutate_file_contents
from mutmut.type_checking import TypeCheckingError

from tests.mutation import run

ROOT = Path(__file__).resolve().parents[2]


@cache
def _mutated(module: str) -> str:
    source = (ROOT / module).read_text(encoding="utf-8")
    return mutate_file_contents(module, source).code


def _by_libcst(path: Path, code: str) -> list[tuple[str, int, int]]:
    visitor = MutatedMethodsCollector(path)
    cst.MetadataWrapper(cst.parse_module(code)).visit(visitor)
    return [
        (m.function_name, m.line_number_start, m.line_number_end) for m in visitor.found_mutants
    ]


@pytest.mark.parametrize(
    "module",
    [
        # module-level functions, a dataclass, properties
        "newsletter/services/sending/progress.py",
        # methods of a class, one of them a staticmethod (its decorator is not its first line)
        "newsletter/services/sending/marking.py",
    ],
)
def test_the_mutant_functions_and_their_lines_are_those_mutmuts_libcst_visitor_finds(module):
    code = _mutated(module)
    path = Path(module)

    found = [
        (m.function_name, m.line_number_start, m.line_number_end)
        for m in run.mutated_functions(path, code)
    ]

    assert len(found) > 50
    assert found == _by_libcst(path, code)


@pytest.fixture
def mutants(tmp_path, monkeypatch):
    """A project whose mutants/ holds the mutated progress module, and a stand-in for
    mypy that reports the errors a test gives it."""
    module = Path("newsletter/services/sending/progress.py")
    target = tmp_path / "mutants" / module
    target.parent.mkdir(parents=True)
    code = _mutated(str(module))
    target.write_text(code, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    reported: list[TypeCheckingError] = []
    monkeypatch.setattr(run, "run_type_checker", lambda command: reported)
    return target.resolve(), code, reported


def test_each_reported_line_names_the_mutant_whose_function_holds_it(mutants):
    target, code, reported = mutants
    functions = run.mutated_functions(target, code)
    second, last = functions[1], functions[-1]
    reported += [
        TypeCheckingError(target, second.line_number_end, "second"),
        TypeCheckingError(target, last.line_number_start, "last"),
    ]

    caught = run.caught_by_the_type_checker()

    module = "newsletter.services.sending.progress"
    assert set(caught) == {f"{module}.{second.function_name}", f"{module}.{last.function_name}"}
    assert caught[f"{module}.{last.function_name}"].error.error_description == "last"


def test_a_report_outside_every_mutant_function_stops_the_run(mutants):
    target, code, reported = mutants
    lines = code.splitlines()
    imports_line = next(n for n, line in enumerate(lines, 1) if line.startswith("from "))
    reported.append(TypeCheckingError(target, imports_line, "an error in unchanged code"))

    with pytest.raises(RuntimeError, match="outside every mutant function"):
        run.caught_by_the_type_checker()


def test_the_stats_pass_is_shared_out_by_file_less_the_ignored_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, size in {
        "tests/test_big.py": 900,
        "tests/a/test_one.py": 500,
        "tests/a/test_two.py": 400,
        "tests/a/helpers.py": 5000,  # not a test file
        "tests/mutation/test_plugin.py": 300,  # ignored with its directory
        "tests/test_deploy.py": 100,  # ignored by name
        "tests/b/test_three.py": 200,
    }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x" * size)

    files = run.test_files(
        ["tests"],
        run._ignored(["-m", "x", "--ignore=tests/mutation", "--ignore=tests/test_deploy.py"]),
    )

    assert files == [
        "tests/a/test_one.py",
        "tests/a/test_two.py",
        "tests/b/test_three.py",
        "tests/test_big.py",
    ]
    assert run.shared_out(files, 2) == [
        ["tests/b/test_three.py", "tests/test_big.py"],  # 900, then 200 on a tie
        ["tests/a/test_one.py", "tests/a/test_two.py"],  # 500 + 400
    ]
    assert run.shared_out(files, 1) == [files]
    assert run.shared_out(files[:1], 4) == [files[:1]]  # no empty parts


@pytest.fixture
def marking(tmp_path, monkeypatch):
    """The mutated sending/marking.py in a mutants/-like tree, with its functions."""
    module = "newsletter/services/sending/marking.py"
    target = tmp_path / module
    target.parent.mkdir(parents=True)
    code = _mutated(module)
    target.write_text(code, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    functions = run.mutated_functions(target.resolve(), code)
    originals = {
        f.function_name.removesuffix("__mutmut_orig"): f
        for f in functions
        if f.function_name.endswith("__mutmut_orig")
    }
    return target.resolve(), code, functions, originals


def test_a_mutant_runs_the_tests_that_ran_a_line_of_each_statement_it_changes(marking):
    target, code, functions, originals = marking
    # Each line of the original functions was run by a test of its own.
    lines_run_by = {
        n: {f"t.py::line_{n}"}
        for f in originals.values()
        for n in range(f.line_number_start + 1, f.line_number_end + 1)
    }

    found = run.line_tests(code, target, lines_run_by)

    lines = code.splitlines()
    spread = 0
    for f in functions:
        base, _, number = f.function_name.rpartition("__mutmut_")
        name = f"newsletter.services.sending.marking.{f.function_name}"
        if not number.isdigit():
            continue
        original = originals[base]
        changed = run.changed_lines(lines, f, original)
        ran = {int(t.removeprefix("t.py::line_")) for t in found.get(name, [])}
        assert changed - {original.line_number_start} <= ran  # every changed line's test
        assert all(original.line_number_start < n <= original.line_number_end for n in ran)
        spread += len(ran - changed) > 0  # and the rest of a multi-line statement's
    assert spread > 10


def test_a_mutant_of_a_line_no_test_ran_is_not_narrowed(marking):
    target, code, _functions, originals = marking
    # Only the module's import ran these functions' def lines (the "" context).
    lines_run_by = {f.line_number_start: {""} for f in originals.values()}

    assert run.line_tests(code, target, lines_run_by) == {}
