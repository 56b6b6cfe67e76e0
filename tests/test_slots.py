"""Test runs side by side (`make mutate`) each take a slot of their own (tests/slots.py)."""

from __future__ import annotations

import os

import pytest

from tests import processes, slots


@pytest.fixture
def no_slot_held(monkeypatch):
    """This process as if it held no slot: the slots it takes here are released after."""
    monkeypatch.setattr(slots, "_held", [])
    monkeypatch.delenv("TEST_SLOT", raising=False)
    yield
    for lock in slots._held:
        lock.close()


def in_a_fork(function) -> str:
    """What `function` returns when called in a forked child of this process."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.close(read_end)
        try:
            answer = str(function())
        except Exception as error:  # noqa: BLE001 (reported to the parent)
            answer = f"error: {error}"
        os.write(write_end, answer.encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        text = answer.read()
    os.waitpid(pid, 0)
    return text


def test_a_forked_child_takes_a_slot_of_its_own_not_the_one_it_inherited(tmp_path, no_slot_held):
    assert slots.take("test_x", 3, directory=str(tmp_path)) == 0
    assert os.environ["TEST_SLOT"] == "0"

    # The child inherits the parent's lock and TEST_SLOT=0; it must not run in slot 0.
    assert (
        in_a_fork(lambda: (slots.take("test_x", 3, directory=str(tmp_path)), slots.current()))
        == "(1, 1)"
    )
    # The child has exited: its slot is free again, the parent's is still held.
    assert in_a_fork(lambda: slots.take("test_x", 3, directory=str(tmp_path))) == "1"
    assert slots.current() == 0


def test_children_running_at_once_each_get_another_slot_and_the_last_finds_none(
    tmp_path, no_slot_held
):
    def take_and_fork_again(depth: int) -> str:
        slot = slots.take("test_y", 2, directory=str(tmp_path))
        if depth == 0:
            return str(slot)
        return f"{slot} {in_a_fork(lambda: take_and_fork_again(depth - 1))}"

    assert (
        in_a_fork(lambda: take_and_fork_again(2))
        == "0 1 error: All 2 slots of test_y are in use (TEST_DATABASE_SLOTS)."
    )


def test_other_names_have_slots_of_their_own(tmp_path, no_slot_held):
    assert slots.take("test_a", 2, directory=str(tmp_path)) == 0
    assert in_a_fork(lambda: slots.take("test_b", 2, directory=str(tmp_path))) == "0"


def test_each_slot_has_redis_databases_no_other_slot_uses(monkeypatch):
    by_slot = {}
    for slot in range(4):
        monkeypatch.setenv("TEST_SLOT", str(slot))
        by_slot[slot] = [processes.redis_database_url(db).rsplit("/", 1)[1] for db in range(4, 8)]
    assert by_slot[0] == ["4", "5", "6", "7"]  # as without slots
    everything = [db for dbs in by_slot.values() for db in dbs]
    assert sorted(everything, key=int) == [str(db) for db in range(16)]

    monkeypatch.delenv("TEST_SLOT")
    assert processes.redis_database_url(6).endswith("/6")
    monkeypatch.setenv("TEST_SLOT", "4")
    with pytest.raises(RuntimeError, match="4 slots"):
        processes.redis_database_url(6)
