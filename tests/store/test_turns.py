"""SQLite's writers take turns across processes (server/store/turns.py): a writer of another
process waits while one holds its turn and gets it when that one ends, gives up at its timeout
without keeping the lock, and gets the turn of a process that was killed; the observers of a
process's turns are told how long each was held."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from server.store.turns import WriterTurns
from tests.e2e.test_process import ROOT

# A process that takes the turn, says "held", and lets it go when told (or is killed).
HOLDER = textwrap.dedent(
    """
    import sys
    from server.store.turns import WriterTurns

    turns = WriterTurns(sys.argv[1])
    assert turns.acquire(10)
    print("held", flush=True)
    sys.stdin.readline()
    turns.release()
    print("released", flush=True)
    sys.stdin.readline()
    """
)


# A process whose threads each add 1 to a number in a file, `rounds` times, each in its turn.
COUNTER = textwrap.dedent(
    """
    import pathlib, sys, threading
    from server.store.turns import WriterTurns

    turns, counter, rounds = WriterTurns(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])

    def add():
        for _ in range(rounds):
            assert turns.acquire(60)
            counter.write_text(str(int(counter.read_text()) + 1))
            turns.release()

    threads = [threading.Thread(target=add) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    """
)


class Holder:
    def __init__(self, database: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, database],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdin is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        assert self.stdout.readline() == "held\n"

    def release(self) -> None:
        self.stdin.write("\n")
        self.stdin.flush()
        assert self.stdout.readline() == "released\n"

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def database(tmp_path):
    return str(tmp_path / "turns.db")


def test_a_writer_waits_while_another_process_holds_the_turn_and_gets_it_when_it_ends(database):
    holder = Holder(database)
    turns = WriterTurns(database)
    got: list[bool] = []

    def write() -> None:
        got.append(turns.acquire(30))
        turns.release()

    try:
        waiting = threading.Thread(target=write)
        waiting.start()
        waiting.join(0.5)
        assert got == []  # still waiting: the other process holds the turn
        holder.release()
        waiting.join(30)
        assert got == [True]
    finally:
        holder.close()
        turns.close()


def test_a_writer_gives_up_at_its_timeout_and_leaves_the_lock_to_others(database):
    holder = Holder(database)
    turns = WriterTurns(database)
    try:
        assert turns.acquire(0.3) is False
        holder.release()
        # The turn that came after this process gave up was let go: another process takes it.
        second = Holder(database)
        second.release()
        second.close()
        # And this process takes it again, at once.
        assert turns.acquire(5) is True
        turns.release()
    finally:
        holder.close()
        turns.close()


def test_the_writers_of_several_processes_never_overlap(database, tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0")
    writers = [
        subprocess.Popen([sys.executable, "-c", COUNTER, database, str(counter), "100"], cwd=ROOT)
        for _ in range(3)
    ]

    assert [writer.wait(120) for writer in writers] == [0, 0, 0]
    assert counter.read_text() == "900"  # 3 processes x 3 threads x 100, none lost


def test_a_process_whose_writers_keep_coming_still_lets_another_process_write(database, tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0")
    busy = subprocess.Popen(
        [sys.executable, "-c", COUNTER, database, str(counter), "100000"], cwd=ROOT
    )
    turns = WriterTurns(database)
    try:
        while int(counter.read_text() or 0) < 100:  # its three threads are writing
            assert busy.poll() is None
            time.sleep(0.01)
        # Its writers pass the lock on to one another a few turns at most, then let go.
        for _ in range(20):
            assert turns.acquire(5) is True
            turns.release()
        assert busy.poll() is None  # still writing all along
    finally:
        busy.kill()
        busy.wait()
        turns.close()


def test_the_turn_of_a_killed_process_is_let_go(database):
    holder = Holder(database)
    turns = WriterTurns(database)
    try:
        os.kill(holder.process.pid, signal.SIGKILL)
        holder.process.wait()
        assert turns.acquire(10) is True
        turns.release()
    finally:
        turns.close()


def test_threads_take_turns_and_a_thread_takes_its_own_turn_again(database):
    turns = WriterTurns(database)
    inside, overlaps = [0], []

    def write() -> None:
        for _ in range(200):
            assert turns.acquire(10)
            assert turns.acquire(10)  # a savepoint inside the transaction
            inside[0] += 1
            overlaps.append(inside[0])
            time.sleep(0)
            inside[0] -= 1
            turns.release()
            turns.release()

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    turns.close()

    assert len(overlaps) == 800 and set(overlaps) == {1}


def test_observers_are_told_how_long_each_turn_was_held_once_for_a_turn_taken_again(database):
    turns = WriterTurns(database)
    held: list[float] = []
    turns.observe(held.append)
    turns.observe(held.append)  # once is enough

    before = time.perf_counter()
    assert turns.acquire(10)
    assert turns.acquire(10)  # a savepoint inside the transaction
    time.sleep(0.05)
    turns.release()
    assert held == []  # still held
    turns.release()
    elapsed = time.perf_counter() - before
    assert turns.acquire(10)
    turns.release()
    turns.close()

    assert len(held) == 2
    assert 0.05 <= held[0] <= elapsed
    assert 0 <= held[1] < held[0]


def test_a_turn_passed_on_within_the_process_counts_from_the_hand_over(database):
    turns = WriterTurns(database)
    held: list[float] = []
    turns.observe(held.append)
    assert turns.acquire(10)
    waiter = threading.Thread(target=lambda: turns.acquire(10) and turns.release())
    waiter.start()
    deadline = time.monotonic() + 10
    while turns._waiting == 0:  # the waiter waits for the threads' lock
        assert time.monotonic() < deadline
        time.sleep(0.001)
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        # The file's lock goes on to the waiter, which cannot take its turn before this thread
        # lets the GIL go: 50 ms in which no other process may write.
        turns.release()
        handed = time.perf_counter()
        while time.perf_counter() - handed < 0.05:
            pass
    finally:
        sys.setswitchinterval(switching)
    waiter.join(10)
    turns.close()

    assert len(held) == 2
    assert held[1] >= 0.05


def test_an_observer_that_fails_is_logged_and_the_turn_let_go(database, caplog):
    turns = WriterTurns(database)

    def failing(seconds: float) -> None:
        raise RuntimeError("the metrics broke")

    turns.observe(failing)
    assert turns.acquire(10)
    turns.release()
    other = threading.Thread(target=lambda: got.append(turns.acquire(5)))
    got: list[bool] = []
    other.start()
    other.join(10)
    turns.close()

    assert got == [True]
    assert "an observer of the writer's turns failed" in caplog.text
    assert "the metrics broke" in caplog.text


def test_closed_turns_wake_their_writers_and_give_no_turn(database):
    holder = Holder(database)
    turns = WriterTurns(database)
    got: list[bool] = []

    def write() -> None:
        got.append(turns.acquire(60))

    try:
        waiting = threading.Thread(target=write)
        waiting.start()
        waiting.join(0.3)
        turns.close()
        waiting.join(10)
        assert got == [False]  # woken at once, not after its 60 s
        assert turns.acquire(1) is False
        holder.release()
        # Nothing of this process holds the lock: another process takes it.
        second = Holder(database)
        second.release()
        second.close()
    finally:
        holder.close()


def test_a_database_in_memory_has_no_lock_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    turns = WriterTurns(None)
    assert turns.acquire(1)
    turns.release()
    turns.close()
    assert list(tmp_path.iterdir()) == []
