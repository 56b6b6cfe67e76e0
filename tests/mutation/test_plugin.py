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
    monkeypatch.setenv("MUTANT_UNDER_TEST", "fail")  # mutmut's forced failure: no mutant
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


def run_in_a_child(cpu_limit: int, body, durations=None, markers=()) -> tuple[str, int]:
    """What a forked child wrote, and how it ended, given mutmut's CPU limit, the tests'
    times in the stats pass, its test database markers and `body` (called with `write`
    and the child's limits). A timing-out child leaves no MUTATE_TIMINGS line and marks
    no database of the run this test is part of (under `make mutate`)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.close(read_end)
        plugin._TIMINGS.clear()
        plugin._SLOT_MARKERS = list(markers)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_limit, cpu_limit + 1))
        limits = plugin._TimeLimits(durations or {})
        limits.install()
        body(lambda text: os.write(write_end, text.encode()), limits)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as out:
        written = out.read()
    _, status = os.waitpid(pid, 0)
    return written, os.waitstatus_to_exitcode(status)


def test_mutmuts_wall_clock_signal_does_not_end_a_run_that_is_only_slow():
    def slow(write, limits):
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGXCPU)  # what mutmut sends at its wall-clock limit
        time.sleep(0.2)
        write("still running")

    written, exit_code = run_in_a_child(30, slow)
    assert written == "still running"
    assert exit_code == 0


def test_a_run_still_going_long_after_the_wall_clock_signal_times_out():
    def blocked(write, limits):
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGXCPU)
        started = time.monotonic()
        time.sleep(5)  # ended by the alarm, some 0.6 s after the signal
        write(f"woke after {time.monotonic() - started:.1f}s")

    written, exit_code = run_in_a_child(30, blocked)
    assert written == ""
    assert exit_code == -signal.SIGXCPU  # mutmut's "timeout"


def test_a_run_that_reaches_the_cpu_limit_times_out_at_once():
    def spinning(write, limits):
        while plugin._cpu() < 10:
            pass
        write("spun for ten CPU seconds")

    written, exit_code = run_in_a_child(1, spinning)
    assert written == ""
    assert exit_code == -signal.SIGXCPU


def spin(seconds: float) -> None:
    until = plugin._cpu() + seconds
    while plugin._cpu() < until:
        pass


@pytest.fixture
def short_allowances(monkeypatch):
    """Per-test limits of a second or less beyond the stats pass's times; the other
    kind of limit of a test is left at a minute, so that a busy machine cannot end it."""

    def allow(cpu: float = 60.0, wall: float = 60.0) -> None:
        monkeypatch.setattr(plugin, "TEST_CPU_FACTOR", 2.0)
        monkeypatch.setattr(plugin, "TEST_CPU_ALLOWANCE", cpu)
        monkeypatch.setattr(plugin, "TEST_WALL_FACTOR", 2.0)
        monkeypatch.setattr(plugin, "TEST_WALL_ALLOWANCE", wall)

    return allow


def test_a_test_that_spins_past_its_own_share_of_cpu_times_out_long_before_the_runs_limit(
    short_allowances,
):
    short_allowances(cpu=0.3)

    def tests(write, limits):
        limits.start_test("t.py::usual")  # 0.2 s in the stats pass: may take 0.7
        spin(0.5)
        limits.end_test()
        write("usual passed; ")
        limits.start_test("t.py::looping")
        spin(5)
        write("looped for five seconds")

    written, exit_code = run_in_a_child(60, tests, {"t.py::usual": 0.2, "t.py::looping": 0.2})
    assert written == "usual passed; "
    assert exit_code == -signal.SIGXCPU


def test_a_test_blocked_past_its_own_share_of_the_wall_clock_times_out(short_allowances):
    short_allowances(wall=2.0)

    def tests(write, limits):
        limits.start_test("t.py::waiting")  # 0.1 s in the stats pass: may wait 2.2
        time.sleep(0.2)
        limits.end_test()
        write("a short wait passed; ")
        limits.start_test("t.py::waiting")
        time.sleep(5)
        write("waited five seconds")

    written, exit_code = run_in_a_child(60, tests, {"t.py::waiting": 0.1})
    assert written == "a short wait passed; "
    assert exit_code == -signal.SIGXCPU


def test_a_tests_limit_ends_with_it_and_the_runs_own_deadline_still_holds(short_allowances):
    short_allowances(wall=0.5)

    def tests(write, limits):
        time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGXCPU)  # mutmut's wall-clock signal: ends at 3 s
        limits.start_test("t.py::quick")
        limits.end_test()
        time.sleep(0.2)
        write("still running; ")
        time.sleep(5)
        write("past the run's deadline")

    written, exit_code = run_in_a_child(60, tests, {"t.py::quick": 0.1})
    assert written == "still running; "
    assert exit_code == -signal.SIGXCPU


def test_the_test_databases_setup_does_not_count_against_the_first_tests_limits(
    short_allowances,
):
    short_allowances(cpu=0.3, wall=2.0)

    def tests(write, limits):
        limits.start_test("t.py::first")
        setup = limits.pytest_fixture_setup(SimpleNamespace(argname="django_db_setup"), None)
        next(setup)
        spin(0.6)  # the full setup of a slot's first run: past the test's CPU limit
        time.sleep(2.5)  # and past its wall-clock one
        with pytest.raises(StopIteration):
            setup.send(None)
        spin(0.1)
        write("the test went on; ")
        spin(5)
        write("spun past its limit")

    written, exit_code = run_in_a_child(60, tests)
    assert written == "the test went on; "
    assert exit_code == -signal.SIGXCPU


def test_a_run_that_times_out_marks_its_test_database_to_be_emptied(
    tmp_path, monkeypatch, short_allowances
):
    short_allowances(cpu=0.2)
    marker = tmp_path / "test_broadside_slot1.schema"
    marker.write_text("4242\n")

    def stuck(write, limits):
        limits.start_test("t.py::stuck")
        spin(60)

    _written, exit_code = run_in_a_child(60, stuck, markers=[str(marker)])
    assert exit_code == -signal.SIGXCPU
    assert marker.read_text() != "4242\n"


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


def test_a_stats_pass_in_parts_leaves_one_record_once_every_part_has_passed(monkeypatch, killers):
    monkeypatch.setenv(plugin.STATS_PART, "0")
    finish_the_stats_pass(monkeypatch, 0, "t.py::a")
    monkeypatch.setenv(plugin.STATS_PART, "1")
    finish_the_stats_pass(monkeypatch, 1, "t.py::b")  # failed: writes nothing
    parent = os.getppid  # what the parts name: the process that forked them
    monkeypatch.setattr(os, "getpid", parent)

    plugin.join_the_stats_parts_passed(2)
    assert not killers.with_name(plugin.STATS_PASSED).exists()

    finish_the_stats_pass(monkeypatch, 0, "t.py::b", "t.py::c")
    plugin.join_the_stats_parts_passed(2)
    record = killers.with_name(plugin.STATS_PASSED).read_text().splitlines()
    assert record == [str(parent()), "t.py::a", "t.py::b", "t.py::c"]
