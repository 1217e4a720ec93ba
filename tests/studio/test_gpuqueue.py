"""The one GPU queue: first come first served, a per-visitor cap, Stop and an abandoned page leave it."""

from __future__ import annotations

import threading

import pytest

from pipelines.types import GenerationCancelled, UserError
from studio.gpuqueue import GpuQueue


def drain(queue: GpuQueue, ticket, stop=None) -> list:
    return list(queue.wait(ticket, stop or threading.Event(), poll_s=0.01))


def test_first_come_first_served_with_positions_and_estimate():
    queue = GpuQueue(per_visitor=2)
    a, b, c = (queue.enter(v, "garment") for v in ("a", "b", "c"))
    assert drain(queue, a) == []  # nobody ahead: the GPU at once
    looks = queue.wait(c, threading.Event(), poll_s=0.01)
    first = next(looks)
    assert first.ahead == 2 and first.text().startswith("Waiting for the GPU: 2 jobs ahead")
    queue.leave(a)
    assert drain(queue, b) == [] and queue.position(c).ahead == 1
    queue.leave(b)
    assert list(looks) == []  # c now gets the GPU, with nothing more to wait for
    assert queue.order == [("a", 1), ("b", 2), ("c", 3)]
    assert queue.snapshot() == [("c", "garment", "running")]
    queue.leave(c)
    assert queue.snapshot() == []


def test_a_visitor_is_capped_and_others_are_not():
    queue = GpuQueue(per_visitor=2)
    queue.enter("a", "garment")
    queue.enter("a", "tryon")
    with pytest.raises(UserError, match="You already have 2 jobs waiting or running"):
        queue.enter("a", "garment")
    queue.enter("b", "garment")  # another visitor still gets a place
    assert [v for v, _, _ in queue.snapshot()] == ["a", "a", "b"]


def test_stop_while_waiting_removes_the_job_and_it_never_runs():
    queue = GpuQueue()
    running = queue.enter("a", "garment")
    drain(queue, running)
    waiting = queue.enter("b", "garment")
    stop = threading.Event()
    looks = queue.wait(waiting, stop, poll_s=0.01)
    assert next(looks).ahead == 1
    stop.set()
    with pytest.raises(GenerationCancelled):
        next(looks)
    assert [v for v, _, _ in queue.snapshot()] == ["a"]
    queue.leave(running)
    assert queue.order == [("a", 1)]


def test_an_abandoned_waiter_leaves_in_its_finally_and_the_next_one_runs():
    queue = GpuQueue()
    first = queue.enter("a", "garment")
    drain(queue, first)
    gone, after = queue.enter("gone", "garment"), queue.enter("c", "garment")

    def handler(ticket):  # what the studio's handler does around wait()
        try:
            yield from queue.wait(ticket, threading.Event(), poll_s=0.01)
            yield "ran"
        finally:
            queue.leave(ticket)

    page = handler(gone)
    next(page)
    page.close()  # Gradio closes the generator of a page that went away
    queue.leave(first)
    assert "ran" in list(handler(after))
    assert queue.order == [("a", 1), ("c", 3)]


def test_the_estimate_follows_finished_jobs():
    queue = GpuQueue()
    for visitor in ("a", "b"):
        ticket = queue.enter(visitor, "garment")
        drain(queue, ticket)
        ticket.started -= 4.0  # it ran for 4 s
        queue.leave(ticket)
    running, waiting = queue.enter("c", "garment"), queue.enter("d", "garment")
    drain(queue, running)
    assert queue.position(waiting).ahead == 1 and 3.9 < queue.position(waiting).eta_s < 4.5


def test_a_first_click_before_the_page_load_event_gets_the_id_the_page_will_keep():
    """The race of the issue: Generate 1.5 s after the page appeared, before the load event stored an id. The
    click and the load event both derive the id from the page session, so they agree and nothing is refused."""
    from types import SimpleNamespace

    from studio.components import USER_ID, visitor_id

    page = SimpleNamespace(session_hash="a1b2c3d4e5")
    other = SimpleNamespace(session_hash="zz9")
    first_click = visitor_id("", page)  # BrowserState still empty
    at_load = visitor_id(None, page)
    assert USER_ID.match(first_click) and first_click == at_load
    assert visitor_id("", other) != first_click  # another page: another visitor
    kept = "0123456789abcdef0123456789abcdef"
    assert visitor_id(kept, other) == kept  # the id the browser kept wins (reloads, other tabs)
    assert visitor_id("../../etc", page) == first_click  # never a path from the browser
    with pytest.raises(Exception, match="no browser session"):
        visitor_id("", None)
