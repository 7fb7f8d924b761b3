"""Admission in waves (worker/host/scheduler.py), on a fake scheduler base: when a backlog is held
back and when it is let in. test_engine_scheduler_vllm.py runs it on the installed vLLM's own
scheduler classes, tests/e2e/test_admission.py on the real CPU engine; its effect on throughput
is measured on a GPU (docs/performance.md, "Admission in waves")."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from worker.host import scheduler as engine_scheduler
from worker.host.engine import with_admission_waves
from worker.host.scheduler import CONFIG_KEY, GATHER_KEY, HOLD_KEY, _AdmissionWaves


class FakeSchedulerBase:
    """Stands in for vLLM's Scheduler: a batch of ``cap`` slots; ``schedule`` admits waiting
    requests up to the cap, as vLLM's does, and records the cap it saw."""

    def __init__(self, extra: dict[str, Any], cap: int) -> None:
        self.vllm_config = SimpleNamespace(additional_config=extra)
        self.max_num_running_reqs = cap
        self.running: list[str] = []
        self.waiting: list[str] = []
        self.caps_seen: list[int] = []

    def schedule(self) -> int:
        self.caps_seen.append(self.max_num_running_reqs)
        admitted = 0
        while self.waiting and len(self.running) < self.max_num_running_reqs:
            self.running.append(self.waiting.pop(0))
            admitted += 1
        return admitted


class FakeWaveScheduler(_AdmissionWaves, FakeSchedulerBase):
    pass


def scheduler(wave: int = 4, hold: int = 3, cap: int = 16, running: int = 14, waiting: int = 30):
    s = FakeWaveScheduler({CONFIG_KEY: wave, HOLD_KEY: hold, GATHER_KEY: 0}, cap)
    s.running = [f"r{i}" for i in range(running)]
    s.waiting = [f"w{i}" for i in range(waiting)]
    return s


def test_a_backlog_is_held_while_fewer_than_a_wave_of_slots_are_free_then_let_in():
    s = scheduler(wave=4, hold=3, running=14)  # 2 free, 30 waiting
    assert [s.schedule() for _ in range(3)] == [0, 0, 0]
    assert s.caps_seen == [14, 14, 14]  # the batch counted as full while held
    assert s.max_num_running_reqs == 16  # and the real cap back after each round
    assert s.schedule() == 2  # the 4th round: held long enough


def test_the_slots_freed_while_held_are_refilled_by_one_admission():
    s = scheduler(wave=4, hold=3, running=14)
    assert s.schedule() == 0
    s.running = s.running[:12]  # two more finish: a wave's worth of slots is free
    assert s.schedule() == 4


@pytest.mark.parametrize(
    ("running", "waiting", "why"),
    [
        (0, 30, "nothing runs"),
        (16, 30, "no slot is free"),
        (12, 30, "a wave of slots is free"),
        (14, 2, "the backlog fits the free slots"),
        (14, 0, "nothing waits"),
    ],
)
def test_never_held_below_saturation(running: int, waiting: int, why: str):
    s = scheduler(wave=4, running=running, waiting=waiting)
    s.schedule()
    assert s.caps_seen == [16], why


@pytest.mark.parametrize("wave", [0, 1])
def test_a_wave_of_0_or_1_is_vllms_own_scheduling(wave: int):
    s = scheduler(wave=wave, running=14)
    assert s.schedule() == 2


def test_no_genq_config_means_no_holding():
    s = FakeWaveScheduler({}, 16)
    s.running, s.waiting = ["r"] * 15, ["w"] * 5
    assert s.schedule() == 1


class Clock:
    """The scheduler's time.monotonic, moved by hand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 100.0
        monkeypatch.setattr(engine_scheduler.time, "monotonic", lambda: self.now)

    def tick(self, ms: float) -> None:
        self.now += ms / 1000


def gathering(
    monkeypatch: pytest.MonkeyPatch, gather_ms: int = 100, cap: int = 16
) -> tuple[Any, Clock]:
    """A batch of ``cap`` slots (waves of a quarter) that one lone job entered before a burst
    came."""
    clock = Clock(monkeypatch)
    s = FakeWaveScheduler({CONFIG_KEY: cap // 4, GATHER_KEY: gather_ms}, cap)
    s.waiting = ["lone"]
    assert s.schedule() == 1  # an empty batch is never held: the lone job starts at once
    return s, clock


def arrive(s: Any, clock: Clock, n: int, ms: float = 10) -> int:
    """``n`` requests reach the scheduler during a round of ``ms``; then the round is scheduled."""
    s.waiting += [f"b{len(s.running) + len(s.waiting) + i}" for i in range(n)]
    clock.tick(ms)
    return s.schedule()


def test_a_burst_into_a_refilling_batch_is_gathered_then_goes_in_at_once(monkeypatch):
    s, clock = gathering(monkeypatch)
    assert [arrive(s, clock, 3) for _ in range(4)] == [0, 0, 0, 0]  # 3 a round: a burst
    assert s.caps_seen[-1] == 1 and s.max_num_running_reqs == 16
    assert arrive(s, clock, 3) == 15  # the backlog fills the free slots: all of it, one prefill
    assert len(s.running) == 16


def test_a_gathered_burst_goes_in_when_it_pauses(monkeypatch):
    s, clock = gathering(monkeypatch)
    assert [arrive(s, clock, 2), arrive(s, clock, 3)] == [0, 0]
    assert arrive(s, clock, 0, ms=25) == 5  # nothing new for 25 ms: the burst is over


def test_a_burst_is_gathered_for_gather_ms_at_most_then_not_again_until_it_pauses(monkeypatch):
    s, clock = gathering(monkeypatch, gather_ms=100, cap=64)
    held = [arrive(s, clock, 1, ms=5) for _ in range(20)]  # 200 a second, for 100 ms
    assert held == [0] * 20
    assert arrive(s, clock, 1, ms=10) == 21  # past the limit: everything gathered goes in
    # Still arriving, with fewer than a wave running: no second gathering while it lasts.
    s.running = s.running[:2]
    assert [arrive(s, clock, 1, ms=5) for _ in range(3)] == [1, 1, 1]
    assert arrive(s, clock, 0, ms=25) == 0  # it pauses; the next burst is gathered again
    assert [arrive(s, clock, 3), arrive(s, clock, 3)] == [0, 0]


@pytest.mark.parametrize(
    ("running", "arrivals", "why"),
    [
        (0, 6, "an empty batch: the first jobs start at once"),
        (4, 6, "a wave or more runs: not a batch refilling from empty"),
        (2, 1, "one request in 20 ms is not a burst"),
        (2, 14, "the backlog fills the free slots"),
    ],
)
def test_not_gathered(monkeypatch, running: int, arrivals: int, why: str):
    clock = Clock(monkeypatch)
    s = FakeWaveScheduler({CONFIG_KEY: 4, GATHER_KEY: 100}, 16)
    s.running = [f"r{i}" for i in range(running)]
    assert arrive(s, clock, arrivals) == min(arrivals, 16 - running), why


@pytest.mark.parametrize("extra", [{CONFIG_KEY: 4, GATHER_KEY: 0}, {CONFIG_KEY: 0}])
def test_gathering_off(monkeypatch, extra: dict[str, int]):
    clock = Clock(monkeypatch)
    s = FakeWaveScheduler(extra, 16)
    s.running = ["r"]
    assert arrive(s, clock, 3) == 3


def test_the_worker_asks_vllm_for_it_with_a_quarter_of_the_batch_by_default():
    args = with_admission_waves({"max_num_seqs": 256, "additional_config": {"x": 1}}, None)
    assert args["scheduler_cls"] == "worker.host.scheduler.admission_waves"
    assert args["additional_config"] == {"x": 1, CONFIG_KEY: 64}
    held = with_admission_waves({"max_num_seqs": 256}, 32, 8, 250)["additional_config"]
    assert held == {CONFIG_KEY: 32, HOLD_KEY: 8, GATHER_KEY: 250}


def test_off_or_a_scheduler_of_the_users_leaves_vllms_options_alone():
    assert with_admission_waves({"max_num_seqs": 256}, 0) == {"max_num_seqs": 256}
    assert with_admission_waves({"max_num_seqs": 4}, None) == {"max_num_seqs": 4}  # wave 1
    mine = {"max_num_seqs": 256, "scheduler_cls": "my.Scheduler"}
    assert with_admission_waves(mine, 64) == mine
