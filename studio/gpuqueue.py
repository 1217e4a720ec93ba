"""The one GPU queue every generation waits in: first come, first served, shown to each visitor, stoppable.

Gradio's own queue would hold a waiting job where the studio cannot see it (Stop could not remove it, and a
visitor could queue without limit), so the GPU listeners run with a wide concurrency limit and each job waits
HERE instead::

    visitor A: Generate ──► enter() ──► wait(): "2 jobs ahead · about 14 s" … ──► run on the GPU ──► leave()
    visitor B: Generate ──► enter() ──► wait(): Stop pressed ──► GenerationCancelled, removed, never run
    visitor C: page closed ──► Gradio closes the handler's generator ──► leave() in its ``finally``: never run

At most ``per_visitor`` jobs of one visitor wait or run at once; one more is refused with a sentence (the
visitor's earlier jobs keep their places). The estimate is the number of jobs ahead (plus the running one)
times the median duration of the last finished jobs. Torch-free, no Gradio: the tabs turn its items into
status text.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator

from pipelines.types import GenerationCancelled, UserError

DEFAULT_SECONDS = 10.0  # the estimate's job length before any job has finished


@dataclass(eq=False)
class Ticket:
    visitor: str
    task: str
    number: int
    entered: float = field(default_factory=time.monotonic)
    started: float | None = None


@dataclass(frozen=True)
class Waiting:
    """One look at a waiting job: how many jobs run or wait before it, and about how long that takes."""

    ahead: int
    eta_s: float

    def text(self) -> str:
        jobs = "1 job" if self.ahead == 1 else f"{self.ahead} jobs"
        return f"Waiting for the GPU: {jobs} ahead · about {self.eta_s:.0f} s"


class GpuQueue:
    def __init__(self, per_visitor: int = 2, history: int = 20) -> None:
        self.per_visitor = per_visitor
        self._cond = threading.Condition()
        self._waiting: deque[Ticket] = deque()
        self._running: Ticket | None = None
        self._numbers = itertools.count(1)
        self._durations: deque[float] = deque(maxlen=history)
        self.order: list[tuple[str, int]] = []  # (visitor, ticket number) in the order jobs got the GPU

    # -- entering and leaving --------------------------------------------------------------------------
    def enter(self, visitor: str, task: str) -> Ticket:
        """A place at the end of the queue; UserError when the visitor already has ``per_visitor`` jobs."""
        with self._cond:
            mine = sum(t.visitor == visitor for t in self._tickets())
            if mine >= self.per_visitor:
                raise UserError(f"You already have {mine} jobs waiting or running; wait for one to finish "
                                "(or press Stop) before queueing another.")
            ticket = Ticket(visitor, task, next(self._numbers))
            self._waiting.append(ticket)
            return ticket

    def leave(self, ticket: Ticket) -> None:
        """Done, failed, stopped or abandoned: give up the place or the GPU (idempotent)."""
        with self._cond:
            if self._running is ticket:
                self._running = None
                if ticket.started is not None:
                    self._durations.append(time.monotonic() - ticket.started)
            elif ticket in self._waiting:
                self._waiting.remove(ticket)
            self._cond.notify_all()

    # -- waiting -------------------------------------------------------------------------------------
    def wait(self, ticket: Ticket, stop: threading.Event, poll_s: float = 0.5) -> Iterator[Waiting]:
        """Yield a :class:`Waiting` now and whenever the place changes (at least every ``poll_s``) until the
        ticket holds the GPU; raises GenerationCancelled (and leaves) when ``stop`` is set meanwhile."""
        while True:
            with self._cond:
                if stop.is_set():
                    if ticket in self._waiting:
                        self._waiting.remove(ticket)
                    self._cond.notify_all()
                    raise GenerationCancelled("stopped while waiting for the GPU")
                if self._running is None and self._waiting and self._waiting[0] is ticket:
                    self._waiting.popleft()
                    self._running = ticket
                    ticket.started = time.monotonic()
                    self.order.append((ticket.visitor, ticket.number))
                    return
            yield self.position(ticket)  # the caller may be closed here (browser gone): its finally leaves
            with self._cond:
                self._cond.wait(timeout=poll_s)

    def position(self, ticket: Ticket) -> Waiting:
        with self._cond:
            ahead = list(self._waiting).index(ticket) if ticket in self._waiting else 0
            ahead += self._running is not None
            typical = statistics.median(self._durations) if self._durations else DEFAULT_SECONDS
            return Waiting(ahead, ahead * typical)

    # -- looking -------------------------------------------------------------------------------------
    def _tickets(self) -> list[Ticket]:
        return ([self._running] if self._running is not None else []) + list(self._waiting)

    def snapshot(self) -> list[tuple[str, str, str]]:
        """(visitor, task, "running" | "waiting") of every job, in order."""
        with self._cond:
            return [(t.visitor, t.task, "running" if t is self._running else "waiting") for t in self._tickets()]
