"""A first-in-first-out job queue with one worker thread, so concurrent users never run two generations at once.

A job is submitted with its (validated) request and waits its turn; `position` is its place in the line (0 while it
runs). At most `max_waiting` jobs may wait: one more raises QueueFull (the web app answers 429). The work function
reports progress through `Job.report`; an exception in it fails that job with a one-line message and the worker goes
on with the next. Finished jobs are kept (results included) until `keep_finished` newer ones have finished.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ddpm.common.errors import UserError

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"


class QueueFull(Exception):
    """Too many jobs are waiting; the message says how many and what to do."""


@dataclass
class Job:
    """One request's life: queued -> running -> done | failed. Fields written by the worker, read by the app."""

    request: Any
    total_steps: int
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    seq: int = 0  # submission order
    state: str = QUEUED
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    finished_at: float | None = None
    step: int = 0
    preview: bytes | None = None  # PNG of the latest x0 prediction
    preview_version: int = 0
    result: Any = None
    error: str | None = None

    def report(self, step: int, preview: bytes | None = None) -> None:
        """Progress from the work function: `step` of total_steps done, and optionally a new preview image."""
        self.step = step
        if preview is not None:
            self.preview, self.preview_version = preview, self.preview_version + 1

    def eta_s(self) -> float | None:
        """Seconds left, from the mean time per step so far (None before the first step)."""
        if self.state != RUNNING or self.started_at is None or self.step == 0:
            return None
        per_step = (time.monotonic() - self.started_at) / self.step
        return per_step * max(0, self.total_steps - self.step)


class JobQueue:
    """FIFO queue drained by one daemon worker thread calling work(job) -> result."""

    def __init__(self, work: Callable[[Job], Any], max_waiting: int = 8, keep_finished: int = 64) -> None:
        if max_waiting < 1 or keep_finished < 1:
            raise ValueError(f"need max_waiting >= 1 and keep_finished >= 1, got {max_waiting}, {keep_finished}")
        self.work, self.max_waiting, self.keep_finished = work, max_waiting, keep_finished
        self._waiting: deque[Job] = deque()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._running: Job | None = None
        self._counter = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="ddpm-serve-worker", daemon=True)
        self._thread.start()

    def submit(self, request: Any, total_steps: int) -> Job:
        """Queue a job; QueueFull when max_waiting jobs are already waiting."""
        with self._cond:
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(f"the server is busy: {len(self._waiting)} requests are already waiting; "
                                "try again when one has finished")
            job = Job(request, total_steps, seq=next(self._counter))
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._cond.notify()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """0 while running or finished; k >= 1 when k - 1 jobs wait ahead of it (plus the running one)."""
        with self._cond:
            try:
                return self._waiting.index(job) + 1
            except ValueError:
                return 0

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the running job; jobs still waiting are failed."""
        with self._cond:
            self._closed = True
            for job in self._waiting:
                job.state, job.error = FAILED, "the server stopped before this request ran"
            self._waiting.clear()
            self._cond.notify_all()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._waiting.popleft()
                self._running = job
                job.state, job.started_at = RUNNING, time.monotonic()
            self._run(job)
            with self._cond:
                self._running = None
                self._forget_old()

    def _run(self, job: Job) -> None:
        try:
            job.result = self.work(job)
            job.state = DONE
        except UserError as e:
            job.error, job.state = str(e), FAILED
        except Exception as e:  # a bug or an out-of-memory: this job fails, the server stays up
            traceback.print_exc(file=sys.stderr)
            first = (str(e).strip().splitlines() or [""])[0]
            job.error, job.state = f"generation failed ({type(e).__name__}: {first})", FAILED
        finally:
            job.finished_at = time.monotonic()

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in (DONE, FAILED)]
        for job in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._jobs[job.id]
