"""Listed equivalent mutants are skipped only while they are still the change listed."""

from __future__ import annotations

import ast
from types import SimpleNamespace

import pytest

from tests.mutation import equivalents, plugin

MUTATED = """
def x_f__mutmut_orig(a):
    return a + 1


def x_f__mutmut_1(a):
    return a - 1


class Page:
    def xǁPageǁrender__mutmut_2(self):
        return "XXpageXX"
"""


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A mutants/ tree with one mutated module, and a survivors.md to list mutants in."""
    package = tmp_path / "app" / "services"
    package.mkdir(parents=True)
    (package / "content.py").write_text(MUTATED)
    survivors = tmp_path / "survivors.md"
    monkeypatch.setattr(equivalents, "SURVIVORS", survivors)
    equivalents._functions.cache_clear()
    yield tmp_path
    equivalents._functions.cache_clear()


def test_a_mutants_fingerprint_is_its_functions_source_and_changes_with_it(tree):
    first = equivalents.fingerprint("app.services.content.x_f__mutmut_1", tree)
    method = equivalents.fingerprint("app.services.content.xǁPageǁrender__mutmut_2", tree)
    assert len(first) == 12 and len(method) == 12 and first != method
    assert equivalents.fingerprint("app.services.content.x_f__mutmut_9", tree) is None
    assert equivalents.fingerprint("app.services.other.x_f__mutmut_1", tree) is None

    (tree / "app" / "services" / "content.py").write_text(MUTATED.replace("a - 1", "a - 2"))
    equivalents._functions.cache_clear()
    assert equivalents.fingerprint("app.services.content.x_f__mutmut_1", tree) != first
    assert equivalents.fingerprint("app.services.content.xǁPageǁrender__mutmut_2", tree) == method


def test_entries_are_read_with_or_without_their_fingerprint():
    text = (
        "## app\n\n"
        "- `app.services.content.x_f__mutmut_1` (0123456789ab),\n"
        "- `app.services.content.xǁPageǁrender__mutmut_2`: why, which mentions\n"
        "  - `app.services.content.x_g__mutmut_3` in passing, indented\n"
    )
    assert equivalents.listed(text) == {
        "app.services.content.x_f__mutmut_1": "0123456789ab",
        "app.services.content.xǁPageǁrender__mutmut_2": None,
    }


def test_a_refresh_vouches_only_for_mutants_that_survived_the_last_run(tree):
    text = (
        "- `app.services.content.x_f__mutmut_1`,\n"
        "- `app.services.content.xǁPageǁrender__mutmut_2` (000000000000): both equivalent\n"
        "- `app.services.content.x_f__mutmut_7`: renumbered away\n"
    )
    verdicts = {
        "app.services.content.x_f__mutmut_1": 0,
        "app.services.content.xǁPageǁrender__mutmut_2": 1,
    }
    refreshed, problems = equivalents.refresh(text, tree, verdicts)
    current = equivalents.fingerprint("app.services.content.x_f__mutmut_1", tree)
    assert refreshed.splitlines() == [
        f"- `app.services.content.x_f__mutmut_1` ({current}),",
        "- `app.services.content.xǁPageǁrender__mutmut_2` (000000000000): both equivalent",
        "- `app.services.content.x_f__mutmut_7`: renumbered away",
    ]
    assert problems == [
        "app.services.content.xǁPageǁrender__mutmut_2: not surviving (exit 1) in the last run",
        "app.services.content.x_f__mutmut_7: no such mutant now (renumbered or gone)",
    ]


def test_a_listed_mutant_runs_no_test_only_while_its_fingerprint_matches(tree, monkeypatch):
    monkeypatch.chdir(tree)
    monkeypatch.delenv("MUTATE_RECHECK", raising=False)
    name = "app.services.content.x_f__mutmut_1"
    current = equivalents.fingerprint(name, tree)
    equivalents.SURVIVORS.write_text(f"- `{name}` ({current}): equivalent\n")
    assert plugin._a_listed_equivalent_unchanged(name)
    monkeypatch.setenv("MUTANT_UNDER_TEST", name)
    with pytest.raises(pytest.exit.Exception) as ended:
        plugin.pytest_configure(SimpleNamespace())
    assert ended.value.returncode == 0  # mutmut records it as surviving

    monkeypatch.setenv("MUTATE_RECHECK", "1")
    assert not plugin._a_listed_equivalent_unchanged(name)
    monkeypatch.delenv("MUTATE_RECHECK")
    equivalents.SURVIVORS.write_text(f"- `{name}` (000000000000): equivalent once\n")
    assert not plugin._a_listed_equivalent_unchanged(name)
    equivalents.SURVIVORS.write_text(f"- `{name}`: equivalent, never fingerprinted\n")
    assert not plugin._a_listed_equivalent_unchanged(name)
    assert not plugin._a_listed_equivalent_unchanged("app.services.content.x_f__mutmut_9")


def test_a_fingerprint_hashes_exactly_the_source_ast_gives_for_the_function(tmp_path):
    source = (
        'def x_f__mutmut_1(a): return "…é" + a  # one line\n'
        "\n"
        "class Page:\n"
        "    def xǁPageǁrender__mutmut_2(self):\n"
        '        title = "naïve — ☃"\n'
        '        return f"{title}…"\n'
    )
    path = tmp_path / "content.py"
    path.write_text(source)
    equivalents._functions.cache_clear()
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)]
    assert equivalents._functions(path) == {
        node.name: ast.get_source_segment(source, node) for node in nodes
    }
    equivalents._functions.cache_clear()
