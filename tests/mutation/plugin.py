"""The pytest plugin `make mutate` loads (`-p tests.mutation.plugin` in [tool.mutmut]).

It acts only in the test runs mutmut starts, never in `make test`:

- Hypothesis runs derandomized, without its example database and without deadlines
  (the "mutmut" profile): a verdict then depends on the mutant alone, not on the
  examples an earlier run happened to save in mutants/.hypothesis (which two runs side
  by side would also write at once), nor on how busy the machine is. It does not shrink
  a failing example either: the first one kills the mutant.
- A mutant's run does not set its test database up again when a run of this `mutmut
  run` already did (each slot keeps its database, `--reuse-db`): the tables exist, and
  mutmut mutates no model, so only the connection is pointed at it.
- A mutant's time limit is mutmut's CPU limit (twice its wall-clock one, in CPU
  seconds), not its wall clock: on a busy machine (or with a second child beside it)
  a mutant whose tests all pass ran out of wall time and counted as a timeout, that is
  as killed. mutmut's wall-clock signal is let through only after three times its
  wall-clock time (a mutant blocked without using CPU still ends).
- A mutant's tests run killers first, then fastest first (their times in mutmut's
  stats): the tests that already killed another mutant of the same function in this
  `mutmut run` (most kills first), then those that killed one of the same module. With
  `-x` a killed mutant stops at its first failing test, and the test that failed for
  one mutant of a function usually fails for the next: mutmut runs a function's mutants
  one after another. Each first failure is added to KILLERS. The order changes only how
  soon a mutant dies, never whether: each test runs in a transaction of its own.

- A mutant survivors.md lists as equivalent, with the fingerprint it has now (the
  change someone judged unable to alter behaviour, in an unchanged function), ends its
  run at once as surviving, without running its tests (tests/mutation/equivalents.py):
  nothing a test does can kill it, and such survivors cost the most, each running every
  test that reaches its function. MUTATE_RECHECK=1 runs them all again.
- mutmut's clean pass (the tests of the chosen mutants, on the unchanged code) runs
  only the tests its stats pass did not already pass: that pass ran every test on the
  same code a moment earlier, in the same `mutmut run`, which stops when one fails.
  The stats pass writes the tests it passed to STATS_PASSED, naming the process both
  passes are forked from; the clean pass keeps at least one test (mutmut counts a run
  of none as a failure). A run that reused earlier stats runs its clean pass in full.
  A stats pass run in parts (tests/mutation/run.py) writes a record per part, joined
  once every part has passed.

- The stats pass also records, with coverage.py, which test ran each line of the
  mutated modules (a coverage context per test, in LINES.<part>). From that,
  tests/mutation/run.py names for each mutant the tests that ran the statement it
  changes (LINE_TESTS), and a mutant's run leaves out the other tests that reach its
  function: a test that never runs the changed statement runs exactly as it does on
  the original code, so it cannot kill the mutant. A mutant whose statement no test
  ran (a default argument, evaluated when the module is imported) runs them all.

With MUTATE_TIMINGS=<file>, each test run appends one JSON line to that file: the
mutant, the exit status, and where the run's CPU and wall time went (collection, the
test database, the tests). `python -m tests.mutation.timings <file>` sums them up.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import time
from collections import Counter
from pathlib import Path

import pytest


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Timings:
    def __init__(self, path: str) -> None:
        self.path = path
        self.start_cpu = _cpu()
        self.start_wall = time.monotonic()
        self.marks: dict[str, float] = {}
        self.database_cpu = 0.0
        self.tests = 0
        self.test_cpu = 0.0
        self.first_failure: str | None = None

    def mark(self, name: str) -> None:
        self.marks[name] = round(_cpu() - self.start_cpu, 4)

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        if fixturedef.argname != "django_db_setup":
            return (yield)
        before = _cpu()
        try:
            return (yield)
        finally:
            self.database_cpu += _cpu() - before

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        before = _cpu()
        try:
            return (yield)
        finally:
            self.tests += 1
            self.test_cpu += _cpu() - before

    def pytest_runtest_logreport(self, report) -> None:
        if report.failed and self.first_failure is None:
            self.first_failure = report.nodeid

    def pytest_collection_finish(self, session) -> None:
        self.mark("collected")

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        self.write(exitstatus=int(exitstatus))

    def write(self, exitstatus: int, failed: str | None = None) -> None:
        """One line for this run; `failed`: the test it timed out in."""
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        line = {
            "mutant": os.environ.get("MUTANT_UNDER_TEST", ""),
            "pid": os.getpid(),
            "exit": exitstatus,
            "tests": self.tests,
            "cpu": round(_cpu() - self.start_cpu, 4),
            # A mutant's run is a forked process: its CPU time counts from the fork,
            # so this is what it spent before pytest configured (argument parsing,
            # plugins), and the total what it spent in all.
            "startup_cpu": round(self.start_cpu, 4),
            "total_cpu": round(_cpu(), 4),
            "children_cpu": round(children.ru_utime + children.ru_stime, 4),
            "wall": round(time.monotonic() - self.start_wall, 4),
            "collection_cpu": self.marks.get("collected"),
            "database_cpu": round(self.database_cpu, 4),
            "tests_cpu": round(self.test_cpu - self.database_cpu, 4),
            "first_failure": failed or self.first_failure,
            "load": os.getloadavg()[0],
        }
        with open(self.path, "a") as out:
            out.write(json.dumps(line) + "\n")


# The MUTATE_TIMINGS recorder of this run, if any (a run that times out writes its line).
_TIMINGS: list[_Timings] = []


def _is_a_mutant(name: str) -> bool:
    # mutmut's other runs: "stats", "fail" (the forced failure), "" (the clean run).
    return "__mutmut_" in name


# One line per killed mutant, "<function>\t<the test that failed first>", in mutants/
# (the runs' working directory), so one `make mutate`'s record: it starts afresh.
KILLERS = "mutmut-killers.txt"


# The tests the stats pass passed, after a first line naming the process it (and the
# clean pass after it) is forked from: mutmut's own.
STATS_PASSED = "mutmut-stats-passed.txt"


# Set in each process of a stats pass run in parts: its number.
STATS_PART = "MUTATE_STATS_PART"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("MUTANT_UNDER_TEST") != "stats" or exitstatus != 0:
        return
    part = os.environ.get(STATS_PART)
    with open(STATS_PASSED if part is None else f"{STATS_PASSED}.{part}", "w") as out:
        out.write(f"{os.getppid()}\n")
        out.writelines(f"{item.nodeid}\n" for item in session.items)


def join_the_stats_parts_passed(parts: int) -> None:
    """STATS_PASSED from the record of each of the parts the stats pass ran in, written
    only if every part passed (wrote its record) and was forked from this process."""
    passed: list[str] = []
    for part in range(parts):
        try:
            with open(f"{STATS_PASSED}.{part}") as record:
                made_by, *tests = record.read().splitlines()
        except (FileNotFoundError, ValueError):
            return
        if made_by != str(os.getpid()):
            return
        passed += tests
    with open(STATS_PASSED, "w") as out:
        out.write(f"{os.getpid()}\n")
        out.writelines(f"{nodeid}\n" for nodeid in passed)


# The stats pass's record of which test ran which line: a coverage.py data file per part.
LINES = "mutmut-lines"

# For each mutant, the tests that ran the statement it changes (tests/mutation/run.py
# fills it in mutmut's fork server, so every mutant's run inherits it).
LINE_TESTS: dict[str, frozenset[str]] = {}


class _RecordLines:
    """Coverage of the mutated modules only, with the running test as the context."""

    def __init__(self, part: str) -> None:
        from coverage import Coverage
        from mutmut.configuration import config

        self.coverage = Coverage(
            data_file=f"{LINES}.{part}",
            include=[os.path.abspath(pattern) for pattern in config().only_mutate],
            config_file=False,
        )
        self.coverage.start()

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.coverage.switch_context(item.nodeid)
        try:
            return (yield)
        finally:
            self.coverage.switch_context("")

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        self.coverage.stop()
        self.coverage.save()


def _passed_in_this_runs_stats_pass() -> set[str]:
    try:
        with open(STATS_PASSED) as record:
            made_by, *passed = record.read().splitlines()
    except (FileNotFoundError, ValueError):
        return set()
    return set(passed) if made_by == str(os.getppid()) else set()


def _a_listed_equivalent_unchanged(mutant: str) -> bool:
    if not _is_a_mutant(mutant) or os.environ.get("MUTATE_RECHECK"):
        return False
    from tests.mutation import equivalents

    # The run's working directory is mutants/, the tree mutmut wrote.
    return equivalents.unchanged(mutant, Path.cwd(), equivalents.listed())


def _function_of(mutant: str) -> str:
    """`pkg.module.x_f__mutmut_3` -> `pkg.module.x_f` (a method's name keeps its class)."""
    return mutant.rsplit("__mutmut_", 1)[0]


def _module_of(function: str) -> str:
    return function.rsplit(".", 1)[0]


class _RecordTheKiller:
    def __init__(self, mutant: str) -> None:
        self.function = _function_of(mutant)
        self.recorded = False

    def pytest_runtest_logreport(self, report) -> None:
        if report.failed and not self.recorded:
            self.recorded = True
            # One short write with O_APPEND: two runs side by side never interleave it.
            line = f"{self.function}\t{report.nodeid}\n".encode()
            fd = os.open(KILLERS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)


def _kills(function: str) -> tuple[Counter[str], Counter[str]]:
    """How many mutants each test killed first, of this function and of its module."""
    of_function: Counter[str] = Counter()
    of_module: Counter[str] = Counter()
    try:
        with open(KILLERS) as record:
            lines = record.read().splitlines()
    except FileNotFoundError:
        return of_function, of_module
    module = _module_of(function)
    for line in lines:
        killed, _tab, nodeid = line.partition("\t")
        if killed == function:
            of_function[nodeid] += 1
        if _module_of(killed) == module:
            of_module[nodeid] += 1
    return of_function, of_module


# The test databases' markers this run wrote (tests/mutation/plugin: one per slot).
_SLOT_MARKERS: list[str] = []


def _reuse_the_slot_database() -> None:
    """A mutant's run skips the migrate and post-migrate work of `create_test_db` when a
    run forked from the same process (mutmut's fork server) set this database up.

    The marker names that process: a later `mutmut run`, whose code may differ, sets the
    database up once again (which creates any table a new model needs), and so does the
    run after one that timed out, which may have ended in a test that writes outside a
    transaction before it could clean up. A database set up again is emptied (`flush`,
    as Django's TransactionTestCase does after each test) before anything reads it.
    """
    from django.conf import settings
    from django.core.management import call_command
    from django.db.backends.base.creation import BaseDatabaseCreation

    full_setup = BaseDatabaseCreation.create_test_db

    def create_test_db(self, verbosity=1, autoclobber=False, serialize=True, keepdb=False):
        name = self._get_test_db_name()
        marker = f"/tmp/{name}.schema"
        made_by = f"{os.getppid()}\n"
        try:
            with open(marker) as existing:
                current = keepdb and existing.read() == made_by
        except FileNotFoundError:
            current = False
        if not current:
            name = full_setup(self, verbosity, autoclobber, False, keepdb)
            call_command("flush", verbosity=0, interactive=False, database=self.connection.alias)
            with open(marker, "w") as out:
                out.write(made_by)
        else:
            self.connection.close()
            settings.DATABASES[self.connection.alias]["NAME"] = name
            self.connection.settings_dict["NAME"] = name
        _SLOT_MARKERS.append(marker)
        if serialize:
            self.connection._test_serialized_contents = self.serialize_db_to_string()
        self.connection.ensure_connection()
        return name

    BaseDatabaseCreation.create_test_db = create_test_db  # type: ignore[method-assign]


def _mark_the_slot_database_dirty() -> None:
    for marker in _SLOT_MARKERS:
        with open(marker, "w") as out:
            out.write("left by a run that timed out\n")


# A test of a mutant's run may take this many times its time in the stats pass, plus the
# allowance, in CPU seconds (all its threads) and, for one blocked without using CPU,
# in wall-clock seconds; past either it has timed out. Generous: a mutant's run shares
# the machine with three others and CPU time hardly changes with load.
TEST_CPU_FACTOR, TEST_CPU_ALLOWANCE = 10.0, 10.0
TEST_WALL_FACTOR, TEST_WALL_ALLOWANCE = 20.0, 30.0


class _TimeLimits:
    """When a mutant's run has timed out (mutmut counts a timeout as killed).

    - The run: mutmut sends SIGXCPU at the CPU limit it set (RLIMIT_CPU), which ends the
      run at once, and after half of it in wall-clock seconds, which only sets a deadline
      at twice the time the run has taken so far (a run that is only slow on a busy
      machine goes on; one blocked without using CPU still ends).
    - Each test: mutmut's limits are those of all the mutant's tests together (some 200
      CPU seconds for a function that forty tests reach), so a mutant that makes one
      test loop or wait forever held a child that long. A test now has TEST_CPU_* and
      TEST_WALL_* of its own time in the stats pass; a test the stats pass did not time
      has the allowances only.

    A run that times out ends with SIGXCPU's own exit (mutmut's "timeout"), first
    marking its test database as holding what a test left there (tests/mutation/plugin
    flushes it before the slot's next run) and writing its MUTATE_TIMINGS line.
    """

    def __init__(self, durations: dict[str, float]) -> None:
        self.durations = durations
        self.cpu_limit, _hard = resource.getrlimit(resource.RLIMIT_CPU)
        self.started = time.monotonic()
        self.run_deadline: float | None = None
        self.test_deadline: float | None = None
        self.test: str | None = None

    def install(self) -> None:
        signal.signal(signal.SIGXCPU, self._on_sigxcpu)
        signal.signal(signal.SIGALRM, self._time_out)
        signal.signal(signal.SIGPROF, self._time_out)

    def start_test(self, nodeid: str) -> None:
        took = self.durations.get(nodeid, 0.0)
        self.test = nodeid
        signal.setitimer(signal.ITIMER_PROF, TEST_CPU_FACTOR * took + TEST_CPU_ALLOWANCE)
        self.test_deadline = time.monotonic() + TEST_WALL_FACTOR * took + TEST_WALL_ALLOWANCE
        self._arm()

    def end_test(self) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0)
        self.test_deadline = None
        self.test = None
        self._arm()

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.start_test(item.nodeid)
        try:
            return (yield)
        finally:
            self.end_test()

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        """The test database's setup (the full one, in a slot's first run) is the run's,
        not the first test's: that test's limits start again after it."""
        if fixturedef.argname != "django_db_setup" or self.test is None:
            return (yield)
        test = self.test
        self.end_test()
        try:
            return (yield)
        finally:
            self.start_test(test)

    def _arm(self) -> None:
        deadlines = [d for d in (self.run_deadline, self.test_deadline) if d is not None]
        if not deadlines:
            signal.setitimer(signal.ITIMER_REAL, 0)
            return
        signal.setitimer(signal.ITIMER_REAL, max(min(deadlines) - time.monotonic(), 0.001))

    def _on_sigxcpu(self, signum: int, frame: object) -> None:
        if self.cpu_limit != resource.RLIM_INFINITY and _cpu() >= self.cpu_limit - 1:
            self._time_out(signum, frame)
        elif self.run_deadline is None:
            now = time.monotonic()
            self.run_deadline = now + 2 * (now - self.started)
            self._arm()

    def _time_out(self, signum: int, frame: object) -> None:
        for timings in _TIMINGS:
            timings.write(exitstatus=-signal.SIGXCPU, failed=self.test)
        _mark_the_slot_database_dirty()
        signal.signal(signal.SIGXCPU, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGXCPU)  # the exit mutmut counts as a timeout


def pytest_configure(config: pytest.Config) -> None:
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if _a_listed_equivalent_unchanged(mutant):
        pytest.exit(f"{mutant} is a listed equivalent, unchanged", returncode=0)
    if mutant == "stats":
        lines = _RecordLines(os.environ.get(STATS_PART, "all"))
        config.pluginmanager.register(lines, "mutate-lines")
    if _is_a_mutant(mutant):
        _reuse_the_slot_database()
        from mutmut.state import state

        limits = _TimeLimits(state().duration_by_test)
        limits.install()
        config.pluginmanager.register(limits, "mutate-time-limits")
        config.pluginmanager.register(_RecordTheKiller(mutant), "mutate-killer")

    from hypothesis import Phase, settings

    # No shrinking: the first failing example already kills the mutant, and shrinking
    # it can take longer than mutmut's timeout (a mutant then counts as "timeout").
    settings.register_profile(
        "mutmut",
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
    )
    settings.load_profile("mutmut")
    path = os.environ.get("MUTATE_TIMINGS")
    if path:
        timings = _Timings(path)
        # Only this run's: the fork server's own session (its warm-up) made one too.
        _TIMINGS[:] = [timings]
        config.pluginmanager.register(timings, "mutate-timings")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if mutant == "":
        _leave_out_what_the_stats_pass_passed(config, items)
    if not _is_a_mutant(mutant):
        return
    from mutmut.state import state

    _leave_out_tests_that_never_ran_the_changed_statement(config, mutant, items)
    durations = state().duration_by_test
    of_function, of_module = _kills(_function_of(mutant))
    # Stable: tests of equal (or unknown) time and kills keep pytest's order.
    items.sort(
        key=lambda item: (
            -of_function[item.nodeid],
            -of_module[item.nodeid],
            durations.get(item.nodeid, 0.0),
        )
    )


def _leave_out_tests_that_never_ran_the_changed_statement(
    config: pytest.Config, mutant: str, items: list[pytest.Item]
) -> None:
    ran_it = LINE_TESTS.get(mutant)
    if not ran_it:
        return
    kept = [item for item in items if item.nodeid in ran_it]
    if not kept:
        return
    left_out = [item for item in items if item.nodeid not in ran_it]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept


def _leave_out_what_the_stats_pass_passed(config: pytest.Config, items: list[pytest.Item]) -> None:
    passed = _passed_in_this_runs_stats_pass()
    if not passed:
        return
    kept = [item for item in items if item.nodeid not in passed] or items[:1]
    keep = {id(item) for item in kept}
    left_out = [item for item in items if id(item) not in keep]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = kept
