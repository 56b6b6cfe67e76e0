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
"""

from __future__ import annotations

import ast
import gc
from collections import defaultdict
from pathlib import Path

import mutmut.__main__ as mutmut_main
from mutmut.configuration import config
from mutmut.mutation.file_mutation import FailedTypeCheckMutant, MutatedMethodLocation
from mutmut.runners.harness import PytestRunner
from mutmut.type_checking import TypeCheckingError, run_type_checker
from mutmut.utils.file_utils import change_cwd
from mutmut.utils.format_utils import get_mutant_name, is_mutated_method_name


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


_warm_up = PytestRunner.warm_up


def warm_up_then_freeze(self: PytestRunner) -> None:
    _warm_up(self)
    gc.collect()
    gc.freeze()


def main() -> None:
    mutmut_main.filter_mutants_with_type_checker = caught_by_the_type_checker
    PytestRunner.warm_up = warm_up_then_freeze  # type: ignore[method-assign]
    mutmut_main.cli()


if __name__ == "__main__":
    main()
