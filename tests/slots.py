"""Test runs side by side (`make mutate`), each with resources of its own.

With TEST_DATABASE_SLOTS=N, a test run takes the first of N slots no other living run
holds (a lock file, held until the process exits) and names it in TEST_SLOT. The slot
gives the run its test database (`<test database>_slot<N>`, kept between runs with
`--reuse-db`) and its Redis databases (`tests.processes.redis_database_url`), so two runs
never flush or fill each other's data.

mutmut starts each mutant's run by forking a process that has already imported the
tests: a slot must be taken by the run itself, never inherited from the process it was
forked from, so the run takes it at its start (`pytest_configure` in tests/conftest.py).
"""

from __future__ import annotations

import fcntl
import os
from typing import IO

# The locks taken, open until the process exits (closing one would release it). A child
# forked from a process inherits them, but a lock belongs to the process that took it.
_held: list[IO[str]] = []


def take(name: str, slots: int, *, directory: str = "/tmp") -> int:
    """Lock the first free of `slots` slots of `name` for this process; its number.

    A slot held by the process this one was forked from is not free: the lock belongs
    to that process, and this one takes another.
    """
    for slot in range(slots):
        lock = open(os.path.join(directory, f"{name}.slot{slot}.lock"), "w")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _held.append(lock)
        os.environ["TEST_SLOT"] = str(slot)
        return slot
    raise RuntimeError(f"All {slots} slots of {name} are in use (TEST_DATABASE_SLOTS).")


def current() -> int:
    """The slot this run holds, 0 without slots."""
    return int(os.environ.get("TEST_SLOT") or 0)
