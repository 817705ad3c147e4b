"""Run a sweep's tasks across a launcher's world (torchrun, srun): one process per rank, no pool of our own.

Rank 0 decides what runs and records: it broadcasts each list of tasks; the list's cases are cut into one block
of consecutive cases per TP group (every backend of a case, and mostly its neighbours, on the same GPUs, so its
speedups compare like with like). The groups run side by side in rounds: round r runs every group's r-th task,
then the world gathers the rows at rank 0. A row names the hosts and devices that ran it.

There is no pool to restart, so what a pool turns into one row ends the job here, with every finished row kept:
- a round past --timeout: every rank's watchdog thread reports where it is; rank 0 records the round's finished
  rows and a `timeout` row (naming the ranks and phases still busy) for each group that did not finish, then every
  rank exits;
- a fault that leaves a rank unusable (a dead device, or any fault among several ranks, whose communicator may be
  mid-collective): its `fault` row is recorded, then the job ends;
- a rank lost (killed, its node gone): the rows received are recorded and the job ends.
Relaunching the same command with --resume RUN_DIR runs what is missing.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch.distributed as dist

from rocbench.core.harness import measure
from rocbench.core.exitcodes import Exit
from rocbench.core.harness.ranks import RankWorker, Task
from rocbench.core.results import TIMEOUT
from rocbench.core.harness.world import LaunchedWorld

ENDED_EXIT = int(Exit.INCOMPLETE)  # a rank's exit code when the job ended early (rank 0 exits with the run's own)

Recorded = tuple[Task, dict]


def brief(err: Exception) -> str:
    """An error's first sentence, without gloo's source location and the advice it appends to a lost connection."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(err).strip().split("\n")[0])
    return text.split(". ")[0][:200]


class LaunchEnded(Exception):
    """The launched job cannot go on; `unfinished` are the round's tasks that got no row."""

    def __init__(self, why: str, unfinished: list[Task]):
        super().__init__(why)
        self.why = why
        self.unfinished = unfinished


@dataclass(frozen=True)
class RoundOutcome:
    """One rank's part of a round, gathered at rank 0."""

    rank: int
    task: Task | None
    row: dict | None  # the group leader's row (the recorded one)
    fatal: bool  # this rank cannot run another task
    lost: str | None  # the task raised outside the harness's phases: a peer lost mid-case


@dataclass(frozen=True)
class WatchdogReport:
    """Where one rank is when its round passed the time limit."""

    rank: int
    busy: bool  # still inside its task
    phase: str
    row: dict | None


class LaunchedExecutor:
    def __init__(self, world: LaunchedWorld, worker: RankWorker, timeout_s: float):
        self.world, self.worker, self.timeout_s = world, worker, timeout_s
        # Rank 0's recorder: (rows, why, unfinished) -> the run's exit code, called when a time limit ends the job.
        self.on_ended: Callable[[list[Recorded], str, list[Task]], int] | None = None
        self.in_flight: list[Task] = []  # the round's tasks that have no row yet (what a stop interrupts)
        self.watchdog = Watchdog(self)
        self.watchdog.start()

    # ---- rank 0 -------------------------------------------------------------------------------------

    def run_tasks(self, tasks: list[Task], stage: str) -> Iterator[Recorded]:
        self._command(("tasks", list(tasks), stage))
        yield from self._rounds(list(tasks), stage)

    def close(self) -> None:
        self._command(("stop",))

    def abort(self) -> None:
        """Rank 0 refused the run (bad input only it can see, e.g. --resume): the others exit with code 2."""
        self._command(("abort",))

    # ---- every other rank -----------------------------------------------------------------------------

    def serve(self) -> int:
        """Run rank 0's task lists until it stops; the exit code."""
        while True:
            try:
                command = self._command(None)
            except RuntimeError:  # rank 0 is gone
                return ENDED_EXIT
            if command[0] == "stop":
                return 0
            if command[0] == "abort":
                return int(Exit.BAD_INPUT)
            try:
                for _ in self._rounds(command[1], command[2]):
                    pass
            except LaunchEnded:
                return ENDED_EXIT

    # ---- both ------------------------------------------------------------------------------------------

    def _command(self, command):
        box = [command]
        dist.broadcast_object_list(box, src=0, group=self.world.world_cpu)
        return box[0]

    def assign(self, tasks: list[Task]) -> list[list[Task]]:
        """Each group's tasks: the list's cases cut into as many consecutive blocks as there are groups, so that
        neighbouring cases (a persistent row and its split-KV twin, two layouts of a shape) share the group's GPUs."""
        order = list(dict.fromkeys(task.case for task in tasks))
        block = -(-len(order) // self.world.groups)
        group_of = {case: i // block for i, case in enumerate(order)}
        queues: list[list[Task]] = [[] for _ in range(self.world.groups)]
        for task in tasks:
            queues[group_of[task.case]].append(task)
        return queues

    def placed(self, rank: int, row: dict) -> dict:
        return {**row, **self.world.placement(rank // self.world.tp)}

    def _rounds(self, tasks: list[Task], stage: str) -> Iterator[Recorded]:
        queues = self.assign(tasks)
        for index in range(max((len(q) for q in queues), default=0)):
            round_tasks = [queue[index] if index < len(queue) else None for queue in queues]
            mine = round_tasks[self.world.group]
            self.in_flight = [task for task in round_tasks if task is not None]
            self.watchdog.arm(round_tasks)
            outcome = self._run(mine, stage)
            self.watchdog.finished(outcome)
            if not self.watchdog.may_gather():
                self.watchdog.join()  # it fired: it ends this process
            gathered: list = [None] * self.world.me.world_size
            try:
                dist.all_gather_object(gathered, outcome, group=self.world.world_cpu)
            except RuntimeError as err:  # a rank is gone: record what this rank has, end the job
                self.watchdog.disarm()
                if outcome.row is not None:
                    yield outcome.task, self.placed(outcome.rank, outcome.row)
                unfinished = [t for t in round_tasks if t is not None and (t != mine or outcome.row is None)]
                raise LaunchEnded(f"a rank stopped answering (its process died or its node was lost): {brief(err)}",
                                  unfinished) from None
            self.watchdog.disarm()
            for part in gathered:
                if part.row is not None:
                    yield part.task, self.placed(part.rank, part.row)
            self.in_flight = []
            broken = [part for part in gathered if part.fatal or part.lost]
            if broken:
                first = broken[0]
                why = (f"rank {first.rank} lost a peer while running case {first.task.case} / {first.task.backend}: "
                       f"{first.lost}" if first.lost else
                       f"rank {first.rank} cannot run another case after the fault in case {first.task.case} / "
                       f"{first.task.backend} (a dead device, or a communicator left mid-collective)")
                recorded = {part.task for part in gathered if part.row is not None}
                raise LaunchEnded(why, [t for t in round_tasks if t is not None and t not in recorded])

    def _run(self, task: Task | None, stage: str) -> RoundOutcome:
        rank = self.world.me.rank
        if task is None:
            return RoundOutcome(rank, None, None, False, None)
        try:
            result = self.worker.run(task, stage)
        except Exception as err:  # noqa: BLE001 - outside the harness's phases: a handshake with a lost peer failed
            return RoundOutcome(rank, task, None, False, f"{type(err).__name__}: {brief(err)}")
        return RoundOutcome(rank, task, result.row if self.world.is_leader else None, result.fatal, None)

    # ---- the time limit (called by the watchdog thread) -------------------------------------------------

    def time_limit_passed(self, outcome: RoundOutcome | None, round_tasks: list[Task | None]) -> None:
        """Every rank's watchdog reports; rank 0 records the finished rows and a timeout row per unfinished group;
        then every rank exits (a hung kernel cannot be taken back inside this process)."""
        world = self.world
        report = WatchdogReport(world.me.rank, outcome is None, measure.current_phase,
                                outcome.row if outcome is not None else None)
        reports: list = [None] * world.me.world_size
        try:
            dist.all_gather_object(reports, report, group=world.watchdog)
        except RuntimeError:
            reports = []  # some rank's watchdog cannot answer (its process is stuck holding the interpreter)
        code = ENDED_EXIT
        if world.me.is_recorder and self.on_ended is not None:
            rows, unfinished = self.timeout_rows(reports, round_tasks)
            why = (f"a case passed the time limit ({self.timeout_s:g} s)" if reports else
                   f"a case passed the time limit ({self.timeout_s:g} s) and some ranks did not answer")
            code = self.on_ended(rows, why, unfinished)
        try:
            dist.barrier(group=world.watchdog)  # nobody exits before rank 0 has written
        except RuntimeError:
            pass
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def timeout_rows(self, reports: list[WatchdogReport], round_tasks: list[Task | None]
                     ) -> tuple[list[Recorded], list[Task]]:
        rows, unfinished = [], []
        for group, task in enumerate(round_tasks):
            if task is None:
                continue
            members = [r for r in reports if r.rank // self.world.tp == group]
            leader = next((r for r in members if r.rank % self.world.tp == 0), None)
            if leader is not None and leader.row is not None:
                rows.append((task, self.placed(leader.rank, leader.row)))
            elif members:
                busy = [f"rank {r.rank} in '{r.phase}'" for r in members if r.busy] or ["waiting on each other"]
                rows.append((task, self.placed(group * self.world.tp, {
                    "status": TIMEOUT, "gate": TIMEOUT,
                    "detail": f"no result within {self.timeout_s:g} s ({', '.join(busy)}); the job ended here"})))
            else:
                unfinished.append(task)
        return rows, unfinished


class Watchdog(threading.Thread):
    """Ends a round that runs past the time limit (see LaunchedExecutor.time_limit_passed)."""

    def __init__(self, executor: LaunchedExecutor):
        super().__init__(name="rocbench-watchdog", daemon=True)
        self.executor = executor
        self.lock = threading.Lock()
        self.deadline: float | None = None
        self.round: list[Task | None] = []
        self.outcome: RoundOutcome | None = None
        self.fired = False

    def arm(self, round_tasks: list[Task | None]) -> None:
        with self.lock:
            self.round, self.outcome = round_tasks, None
            self.deadline = time.monotonic() + self.executor.timeout_s

    def finished(self, outcome: RoundOutcome) -> None:
        with self.lock:
            self.outcome = outcome

    def may_gather(self) -> bool:
        """Once fired, this rank never enters the round's gather, so the round cannot complete anywhere and every
        rank's watchdog fires too."""
        with self.lock:
            return not self.fired

    def disarm(self) -> None:
        with self.lock:
            self.deadline = None

    def run(self) -> None:
        while True:
            with self.lock:
                deadline = self.deadline
                late = deadline is not None and time.monotonic() > deadline
                if late:
                    self.fired = True
                    outcome, round_tasks = self.outcome, self.round
            if late:
                self.executor.time_limit_passed(outcome, round_tasks)
                return
            time.sleep(0.2 if deadline is None else min(0.2, max(0.0, deadline - time.monotonic())))
