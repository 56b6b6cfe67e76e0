"""The plugin of `make mutate` (tests/mutation/plugin.py) acts in mutants' runs only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import settings as hypothesis_settings
from mutmut.state import state

from tests.mutation import plugin


@pytest.fixture
def stats_durations():
    """mutmut's recorded time of each test, as its stats pass leaves them."""
    durations = state().duration_by_test
    saved = dict(durations)
    durations.clear()
    durations.update({"t.py::slow": 3.0, "t.py::fast": 0.1, "t.py::middle": 1.0})
    yield
    durations.clear()
    durations.update(saved)


def items(*nodeids: str) -> list:
    return [SimpleNamespace(nodeid=nodeid) for nodeid in nodeids]


def test_a_mutants_tests_run_fastest_first_and_unknown_ones_keep_their_place(
    monkeypatch, stats_durations
):
    monkeypatch.setenv("MUTANT_UNDER_TEST", "newsletter.services.content.x_f__mutmut_3")
    collected = items("t.py::slow", "t.py::new_a", "t.py::fast", "t.py::middle", "t.py::new_b")
    plugin.pytest_collection_modifyitems(collected)
    assert [item.nodeid for item in collected] == [
        "t.py::new_a",
        "t.py::new_b",
        "t.py::fast",
        "t.py::middle",
        "t.py::slow",
    ]


@pytest.mark.parametrize("run", ["stats", "", "fail"])
def test_mutmuts_other_runs_keep_pytests_order(monkeypatch, stats_durations, run):
    monkeypatch.setenv("MUTANT_UNDER_TEST", run)
    collected = items("t.py::slow", "t.py::fast", "t.py::middle")
    plugin.pytest_collection_modifyitems(collected)
    assert [item.nodeid for item in collected] == ["t.py::slow", "t.py::fast", "t.py::middle"]


def test_hypothesis_runs_the_same_examples_every_time_with_nothing_saved(monkeypatch):
    monkeypatch.setenv("MUTANT_UNDER_TEST", "stats")  # not a mutant: no database patching
    monkeypatch.delenv("MUTATE_TIMINGS", raising=False)
    before = hypothesis_settings._current_profile
    try:
        plugin.pytest_configure(SimpleNamespace())
        assert hypothesis_settings.default.derandomize is True
        assert hypothesis_settings.default.database is None
        assert hypothesis_settings.default.deadline is None
    finally:
        hypothesis_settings.load_profile(before)
    assert hypothesis_settings.default.derandomize is False
