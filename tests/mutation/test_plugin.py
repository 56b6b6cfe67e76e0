"""The plugin of `make mutate` (tests/mutation/plugin.py) acts in mutants' runs only."""

from __future__ import annotations

import os
import resource
import signal
import time
from types import SimpleNamespace

import pytest
from hypothesis import Phase
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
    monkeypatch, stats_durations, killers
):
    monkeypatch.setenv("MUTANT_UNDER_TEST", "newsletter.services.content.x_f__mutmut_3")
    collected = items("t.py::slow", "t.py::new_a", "t.py::fast", "t.py::middle", "t.py::new_b")
    plugin.pytest_collection_modifyitems(config=None, items=collected)
    assert [item.nodeid for item in collected] == [
        "t.py::new_a",
        "t.py::new_b",
        "t.py::fast",
        "t.py::middle",
        "t.py::slow",
    ]


@pytest.fixture
def killers(tmp_path, monkeypatch):
    """The record of first failures a run keeps in its working directory (mutants/)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path / plugin.KILLERS


def test_tests_that_killed_this_functions_mutants_run_first_then_its_modules(
    monkeypatch, stats_durations, killers
):
    killers.write_text(
        "newsletter.services.content.x_f\tt.py::slow\n"
        "newsletter.services.content.x_f\tt.py::middle\n"
        "newsletter.services.content.x_f\tt.py::slow\n"
        "newsletter.services.content.x_g\tt.py::new_b\n"
        "newsletter.services.access.x_f\tt.py::new_a\n"  # another module's: no say
    )
    monkeypatch.setenv("MUTANT_UNDER_TEST", "newsletter.services.content.x_f__mutmut_7")
    collected = items("t.py::new_a", "t.py::fast", "t.py::middle", "t.py::new_b", "t.py::slow")
    plugin.pytest_collection_modifyitems(config=None, items=collected)
    assert [item.nodeid for item in collected] == [
        "t.py::slow",  # killed two of x_f's mutants
        "t.py::middle",  # killed one
        "t.py::new_b",  # killed a mutant of x_g, in the same module
        "t.py::new_a",
        "t.py::fast",
    ]


def test_a_mutants_first_failing_test_is_added_to_the_record_once(killers):
    recorder = plugin._RecordTheKiller("subscriptions.services.tokens.xǁSignerǁsign__mutmut_12")
    for nodeid, failed in (("t.py::passes", False), ("t.py::fails", True), ("t.py::too", True)):
        recorder.pytest_runtest_logreport(SimpleNamespace(nodeid=nodeid, failed=failed))
    assert killers.read_text() == "subscriptions.services.tokens.xǁSignerǁsign\tt.py::fails\n"
    assert plugin._kills("subscriptions.services.tokens.xǁSignerǁsign") == (
        {"t.py::fails": 1},
        {"t.py::fails": 1},
    )


@pytest.mark.parametrize("run", ["stats", "", "fail"])
def test_mutmuts_other_runs_keep_pytests_order(monkeypatch, stats_durations, killers, run):
    monkeypatch.setenv("MUTANT_UNDER_TEST", run)
    collected = items("t.py::slow", "t.py::fast", "t.py::middle")
    plugin.pytest_collection_modifyitems(config=None, items=collected)
    assert [item.nodeid for item in collected] == ["t.py::slow", "t.py::fast", "t.py::middle"]


def test_hypothesis_runs_the_same_examples_every_time_with_nothing_saved(monkeypatch):
    monkeypatch.setenv("MUTANT_UNDER_TEST", "stats")  # not a mutant: no database patching
    monkeypatch.delenv("MUTATE_TIMINGS", raising=False)
    before = hypothesis_settings._current_profile
    derandomized_before = hypothesis_settings.default.derandomize  # True under CI=true
    try:
        plugin.pytest_configure(SimpleNamespace())
        assert hypothesis_settings.default.derandomize is True
        assert hypothesis_settings.default.database is None
        assert hypothesis_settings.default.deadline is None
        assert Phase.shrink not in hypothesis_settings.default.phases
    finally:
        hypothesis_settings.load_profile(before)
    assert hypothesis_settings.default.derandomize is derandomized_before


def run_in_a_child(cpu_limit: int, body) -> tuple[str, int]:
    """What a forked child wrote, and how it ended, given mutmut's CPU limit and `body`."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.close(read_end)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit + 1))
        plugin._time_out_on_cpu_not_on_the_wall_clock()
        body(lambda text: os.write(write_end, text.encode()))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as out:
        written = out.read()
    _, status = os.waitpid(pid, 0)
    return written, os.waitstatus_to_exitcode(status)


def test_mutmuts_wall_clock_signal_does_not_end_a_run_that_is_only_slow():
    def slow(write):
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGXCPU)  # what mutmut sends at its wall-clock limit
        time.sleep(0.2)
        write("still running")

    written, exit_code = run_in_a_child(30, slow)
    assert written == "still running"
    assert exit_code == 0


def test_a_run_still_going_long_after_the_wall_clock_signal_times_out():
    def blocked(write):
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGXCPU)
        started = time.monotonic()
        time.sleep(5)  # ended by the alarm, some 0.6 s after the signal
        write(f"woke after {time.monotonic() - started:.1f}s")

    written, exit_code = run_in_a_child(30, blocked)
    assert written == ""
    assert exit_code == -signal.SIGXCPU  # mutmut's "timeout"


def test_a_run_that_reaches_the_cpu_limit_times_out_at_once():
    def spinning(write):
        while plugin._cpu() < 10:
            pass
        write("spun for ten CPU seconds")

    written, exit_code = run_in_a_child(1, spinning)
    assert written == ""
    assert exit_code == -signal.SIGXCPU


class _Hooks:
    def __init__(self) -> None:
        self.deselected: list = []

    def pytest_deselected(self, items) -> None:
        self.deselected += [item.nodeid for item in items]


def a_config():
    hooks = _Hooks()
    return SimpleNamespace(hook=hooks), hooks


def finish_the_stats_pass(monkeypatch, exitstatus, *nodeids):
    monkeypatch.setenv("MUTANT_UNDER_TEST", "stats")
    plugin.pytest_sessionfinish(SimpleNamespace(items=items(*nodeids)), exitstatus)


def test_the_clean_pass_runs_only_what_the_same_runs_stats_pass_did_not_pass(monkeypatch, killers):
    finish_the_stats_pass(monkeypatch, 0, "t.py::a", "t.py::b")
    monkeypatch.setenv("MUTANT_UNDER_TEST", "")
    config, hooks = a_config()
    collected = items("t.py::a", "t.py::new", "t.py::b")
    plugin.pytest_collection_modifyitems(config=config, items=collected)
    assert [item.nodeid for item in collected] == ["t.py::new"]
    assert hooks.deselected == ["t.py::a", "t.py::b"]


def test_a_clean_pass_whose_every_test_passed_in_the_stats_pass_still_runs_one(
    monkeypatch, killers
):
    finish_the_stats_pass(monkeypatch, 0, "t.py::a", "t.py::b")
    monkeypatch.setenv("MUTANT_UNDER_TEST", "")
    config, hooks = a_config()
    collected = items("t.py::b", "t.py::a")
    plugin.pytest_collection_modifyitems(config=config, items=collected)
    assert [item.nodeid for item in collected] == ["t.py::b"]
    assert hooks.deselected == ["t.py::a"]


def test_a_failed_stats_pass_or_another_runs_leaves_the_clean_pass_whole(monkeypatch, killers):
    finish_the_stats_pass(monkeypatch, 1, "t.py::a")
    assert not killers.with_name(plugin.STATS_PASSED).exists()
    finish_the_stats_pass(monkeypatch, 0, "t.py::a")
    monkeypatch.setattr(os, "getppid", lambda: 1)  # a clean pass forked from elsewhere
    monkeypatch.setenv("MUTANT_UNDER_TEST", "")
    config, hooks = a_config()
    collected = items("t.py::a", "t.py::b")
    plugin.pytest_collection_modifyitems(config=config, items=collected)
    assert [item.nodeid for item in collected] == ["t.py::a", "t.py::b"]
    assert hooks.deselected == []


def test_a_mutants_run_is_never_shortened_by_the_stats_record(monkeypatch, killers):
    finish_the_stats_pass(monkeypatch, 0, "t.py::a", "t.py::b")
    monkeypatch.setenv("MUTANT_UNDER_TEST", "newsletter.services.content.x_f__mutmut_1")
    collected = items("t.py::a", "t.py::b")
    plugin.pytest_collection_modifyitems(config=None, items=collected)
    assert sorted(item.nodeid for item in collected) == ["t.py::a", "t.py::b"]
