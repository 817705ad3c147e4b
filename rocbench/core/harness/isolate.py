"""Run tasks in a pool of rank processes with a per-task timeout: a fault or hang becomes a row."""
from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import socket
import time
from typing import Callable, Iterator

from rocbench.core.harness.ranks import GATE_STAGE, KERNEL_STAGE, PoolSpec, Task, worker_main
from rocbench.core.results import FAULT
from rocbench.core.roofline import Roofline

POLL_S = 0.2
POOL_START_TIMEOUT_S = 240.0


def how_it_ended(exit_code: int) -> str:
    """A rank process's exit code in words; a negative one is the signal that ended it (multiprocessing's rule).
    SIGKILL comes from outside the process, most often from the kernel's out-of-memory killer."""
    if exit_code >= 0:
        return f"exited with code {exit_code}"
    number = -exit_code
    name = signal.Signals(number).name if number in {s.value for s in signal.Signals} else f"signal {number}"
    cause = " (sent from outside: the out-of-memory killer, a job's limits or a user)" if number == signal.SIGKILL else ""
    return f"was killed by {name}{cause}"


def ranks_ended(dead: list[tuple[int, int]]) -> str:
    """The dead ranks, (rank, exit code) each, in words; those a signal ended first: one rank's death makes its
    peers' collectives fail, and they then exit with an error of their own."""
    ordered = sorted(dead, key=lambda rank_code: rank_code[1] >= 0)
    return ", ".join(f"rank {rank} {how_it_ended(code)}" for rank, code in ordered)


class PoolFailure(Exception):
    """The pool cannot go on: `status` is "fault" or "timeout", `detail` says why."""

    def __init__(self, status: str, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rank_context():
    """Rank processes fork from a server process that imported torch and the harness once and never
    touched a GPU (forkserver): a rank starts in a fraction of a second instead of re-importing torch,
    and no CUDA state is ever forked. Each rank then takes the launching process's environment. The fork server
    dies with this process (forkserver_guard), and each rank with the fork server, however this process ends."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["rocbench.core.harness.forkserver_guard", "rocbench.core.harness.ranks"])
    return ctx


class RankPool:
    def __init__(self, spec: PoolSpec):
        self.spec = spec
        self.spec.env = dict(os.environ)  # what the ranks must see (the fork server started earlier)
        self.ctx = rank_context()
        self.results = self.ctx.Queue()
        self.task_queues = [self.ctx.Queue() for _ in range(spec.world_size)]
        self.procs = [
            self.ctx.Process(target=worker_main, args=(rank, spec, self.task_queues[rank], self.results), daemon=True)
            for rank in range(spec.world_size)
        ]
        self.info: dict = {}

    def start(self, timeout_s: float) -> "RankPool":
        for proc in self.procs:
            proc.start()
        ready = set()
        deadline = time.monotonic() + timeout_s
        while len(ready) < len(self.procs):
            kind, rank, payload = self._next(deadline, "starting ranks")
            if kind == "startfail":
                self.kill()
                raise PoolFailure("fault", f"rank {rank} could not start: {payload}")
            if kind == "ready":
                ready.add(rank)
                if rank == 0:
                    self.info = payload
        return self

    def run(self, case_index: int, backend: str, timeout_s: float, stage: str = GATE_STAGE) -> dict:
        task = (case_index, backend, stage)
        for q in self.task_queues:
            q.put(task)
        deadline = time.monotonic() + timeout_s
        row, done, fatal = None, set(), False
        while len(done) < len(self.procs):
            kind, rank, key, payload = self._next(deadline, f"case {case_index} {backend}"
                                                  + (" (kernel timing)" if stage == KERNEL_STAGE else ""))
            if tuple(key) != task:
                continue
            done.add(rank)
            fatal = fatal or payload.fatal
            if rank == 0:
                row = payload.row
        if fatal:
            self.kill()  # ranks exit after a fatal fault; the next task gets a fresh pool
        return row

    def _next(self, deadline: float, what: str):
        while True:
            try:
                return self.results.get(timeout=POLL_S)
            except queue.Empty:
                pass
            dead = [(r, p.exitcode) for r, p in enumerate(self.procs) if p.exitcode is not None and p.exitcode != 0]
            if dead:
                self.kill()
                raise PoolFailure("fault", f"{ranks_ended(dead)} while {what}")
            if time.monotonic() > deadline:
                self.kill()
                raise PoolFailure("timeout", f"no result within the time limit while {what}")

    @property
    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def close(self, timeout_s: float = 30.0) -> None:
        for q in self.task_queues:
            q.put(None)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        self.kill()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for q in [self.results, *self.task_queues]:
            q.cancel_join_thread()
            q.close()


class PoolExecutor:
    """Runs one task at a time on a rank pool, starting it when needed and replacing it after a failure;
    a pool that cannot start, a timeout or a dead rank becomes the task's row."""

    def __init__(self, spec: PoolSpec, timeout_s: float, placement: dict, on_roofline: Callable[[Roofline], None]):
        self.spec, self.timeout_s, self.placement, self.on_roofline = spec, timeout_s, placement, on_roofline
        self.pool: RankPool | None = None

    def run_tasks(self, tasks: list[Task], stage: str) -> Iterator[tuple[Task, dict]]:
        for task in tasks:
            yield task, {**self.run(task, stage), **self.placement}

    def start(self) -> str:
        """Start a pool; the reason it could not start, or ""."""
        try:
            self.pool = RankPool(self.spec).start(POOL_START_TIMEOUT_S)
        except PoolFailure as failure:
            self.spec.port = free_port()
            return failure.detail
        roofline = self.pool.info.get("roofline")
        if roofline and self.spec.options.roofline is None:
            self.on_roofline(roofline)
            # once per run: later pools (after a fault) reuse the numbers
            self.spec.options = dataclasses.replace(self.spec.options, roofline=roofline)
        return ""

    def run(self, task: Task, stage: str = GATE_STAGE) -> dict:
        prefix = "kernel timing: " if stage == KERNEL_STAGE else ""
        if self.pool is None:
            start_error = self.start()
            if self.pool is None:
                return {"status": FAULT, "gate": "fault", "detail": prefix + start_error}
        try:
            row = self.pool.run(task.case, task.backend, self.timeout_s, stage)
        except PoolFailure as failure:
            self.pool = None
            self.spec.port = free_port()
            return {"status": failure.status, "gate": failure.status, "detail": prefix + failure.detail}
        if not self.pool.alive:
            self.pool = None
        return row

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

    def abort(self) -> None:
        """Stop the ranks now (an interrupt): one may hang inside the interrupted task, and close() would give it 30 s."""
        if self.pool is not None:
            self.pool.kill()
            self.pool = None
