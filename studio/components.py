"""Helpers every tab shares: the tab context, per-visitor output galleries, streaming a task with
progress/previews/stop, editor-value conversion, and turning errors into messages a designer reads.

Gradio only. Never imports torch/diffusers: it talks to ``StudioService`` with plain types.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr
import numpy as np
from PIL import Image

from pipelines.preprocess.images import read_png_params, save_png_with_params
from pipelines.types import GenerationCancelled, UserError
from studio.gpuqueue import GpuQueue

logger = logging.getLogger(__name__)

GPU_QUEUE = "gpu"  # short GPU listeners (pose detection, photo -> sketch) share Gradio's queue of one
# Generate buttons: Gradio lets this many handlers in at once; they wait in the studio's own GpuQueue
GENERATE = {"concurrency_id": "generate", "concurrency_limit": 64}
USER_ID = re.compile(r"^[0-9a-f]{32}$")
_SESSION_KEY = secrets.token_bytes(32)  # visitor ids derived from page sessions are only valid in this process


@dataclass
class StudioContext:
    """What a tab builder gets: the service, where outputs go, and shared components (user id, tabs)."""

    service: Any  # pipelines.service.StudioService (duck-typed to keep torch out of studio/)
    outputs: "OutputStore"
    user_id: gr.BrowserState | None = None
    tabs: gr.Tabs | None = None
    # cross-tab "send to" targets, filled by the tab builders: name -> (component, tab id)
    targets: dict[str, tuple[Any, str]] = field(default_factory=dict)
    runs: Any = None  # training.runner.RunManager (the training tab)
    gpu_queue: GpuQueue = field(default_factory=GpuQueue)  # the one queue every Generate waits in
    deferred: list = field(default_factory=list)  # wiring run after every tab exists ("send to")


def new_user_id() -> str:
    return uuid.uuid4().hex


def visitor_id(stored: str | None, request: gr.Request | None) -> str:
    """The visitor's id: the one kept in the browser, else the one derived from this page's session -- the
    same id the page-load event stores in the browser -- so a click that beats the page-load event is never
    refused and its images land in the gallery the visitor sees afterwards."""
    if stored and USER_ID.match(str(stored)):
        return str(stored)
    session = getattr(request, "session_hash", None)
    if not session:
        raise gr.Error("This request has no browser session; reload the page.")
    return hmac.new(_SESSION_KEY, str(session).encode(), hashlib.sha256).hexdigest()[:32]


def check_user_id(user_id: str | None) -> str:
    """The visitor's id from browser storage; anything else (path tricks, empty) is refused."""
    if not user_id or not USER_ID.match(str(user_id)):
        raise gr.Error("Your browser session is not initialised yet; reload the page.")
    return str(user_id)


class OutputStore:
    """Per-visitor output folders under the app's own outputs dir; files are never overwritten.

    ``<root>/<user id>/<task>/<YYYYmmdd-HHMMSS>_<seed>.png`` — each visitor of a shared Space sees only
    their own folder (the id lives in their browser storage).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def user_dir(self, user_id: str) -> Path:
        path = (self.root / check_user_id(user_id)).resolve()
        if self.root not in path.parents:
            raise gr.Error("Invalid session.")
        return path

    def save(self, user_id: str, task: str, images: list[Image.Image], params: list[dict]) -> list[str]:
        folder = self.user_dir(user_id) / re.sub(r"[^a-z0-9_-]", "", task.lower())
        stamp = time.strftime("%Y%m%d-%H%M%S")
        paths = []
        for image, image_params in zip(images, params):
            name = f"{stamp}_{image_params.get('seed', 'x')}.png"
            paths.append(str(save_png_with_params(image, folder / name, image_params)))
        return paths

    def list(self, user_id: str | None, task: str | None = None, limit: int = 60) -> list[str]:
        if not user_id or not USER_ID.match(str(user_id)):
            return []
        base = self.user_dir(user_id)
        pattern = f"{task}/*.png" if task else "*/*.png"
        files = sorted(base.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
        return [str(p) for p in files[:limit]]


# ---------------------------------------------------------------------------------------- streaming
@dataclass
class Progress:
    text: str
    preview: Image.Image | None
    fraction: float


def stream_task(
    service, task: str, params: dict[str, Any], stop_event: threading.Event, preview_every: int = 5
) -> Iterator[Progress | Any]:
    """Run ``service.run`` in a worker thread; yield :class:`Progress` items, then the TaskResult.

    Errors are re-raised in the caller's thread (as gr.Error for known ones).
    """
    updates: queue.Queue = queue.Queue()

    def on_step(info) -> None:
        updates.put(("step", info))

    def work() -> None:
        try:
            updates.put(("done", service.run(task, params, on_step, stop_event, preview_every)))
        except BaseException as error:  # handed to the UI thread, which decides how to show it
            updates.put(("error", error))

    worker = threading.Thread(target=work, name=f"task-{task}", daemon=True)
    worker.start()
    started = time.perf_counter()
    yield Progress("Starting (models load on first use)…", None, 0.0)
    while True:
        try:
            kind, payload = updates.get(timeout=0.5)
        except queue.Empty:
            if stop_event.is_set():
                yield Progress("Stopping…", None, 0.0)
            continue
        if kind == "step":
            info = payload
            fraction = info.overall_step / max(info.overall_total, 1)
            text = (
                f"{info.stage} step {info.step}/{info.total} · overall {info.overall_step}/{info.overall_total}"
                f" · {info.elapsed_s:.1f}s elapsed · ETA {info.eta_s:.1f}s"
            )
            yield Progress(text, info.preview, fraction)
        elif kind == "done":
            logger.info("%s finished in %.1f s", task, time.perf_counter() - started)
            yield payload
            return
        else:
            raise_user_error(payload)


_STOP_EVENTS: dict[str, set[threading.Event]] = {}  # page session -> the Stop flags of its jobs
_STOP_LOCK = threading.Lock()


def new_stop_event(session: str) -> threading.Event:
    """A Stop flag for one job of a page session (Stop sets the flags of every job of that page)."""
    event = threading.Event()
    event.session = session  # type: ignore[attr-defined]
    with _STOP_LOCK:
        _STOP_EVENTS.setdefault(session, set()).add(event)
    return event


def forget_stop_event(event: threading.Event) -> None:
    with _STOP_LOCK:
        events = _STOP_EVENTS.get(event.session, set())  # type: ignore[attr-defined]
        events.discard(event)
        if not events:
            _STOP_EVENTS.pop(event.session, None)  # type: ignore[attr-defined]


def stop_session(session: str) -> int:
    """Set the Stop flag of every job (waiting or running) of a page session; returns how many."""
    with _STOP_LOCK:
        events = list(_STOP_EVENTS.get(session, ()))
    for event in events:
        event.set()
    return len(events)


def wire_stop(button, status) -> None:
    """Stop: set the session's flag; the running pipeline raises at its next step."""
    def on_stop(request: gr.Request):
        if not stop_session(request.session_hash):
            return "Nothing to stop."
        return "Stopping (a waiting job leaves the queue; a running one stops after its current step)…"

    button.click(on_stop, None, status, queue=False)


def form_inputs(ctx: "StudioContext", form: dict[str, Any]) -> set:
    """A form's components (a set: handlers receive a dict component -> value) plus the visitor id."""
    return set(form.values()) | ({ctx.user_id} if ctx.user_id is not None else set())


def wire_gallery(ctx: "StudioContext", gallery, selected, details) -> None:
    """Selecting a gallery image remembers its path and shows its stored parameters."""
    def on_select(evt: gr.SelectData):
        path = evt.value["image"]["path"] if isinstance(evt.value, dict) else evt.value
        try:
            return path, params_markdown(load_params(path))
        except gr.Error:
            return path, "No parameters stored in this image."

    gallery.select(on_select, None, [selected, details], queue=False)


def wire_send(ctx: "StudioContext", button, selected, target_name: str, label: str) -> None:
    """"Send selected to <tab>": wired after every tab exists (targets are registered by the tab builders)."""
    def on_send(path):
        if not path:
            raise gr.Error("Select an image in the gallery first.")
        return path, gr.Tabs(selected=ctx.targets[target_name][1])

    def wire():
        target = ctx.targets.get(target_name)
        if target is not None and ctx.tabs is not None:
            button.click(on_send, selected, [target[0], ctx.tabs], queue=False)
        else:
            button.click(lambda: gr.Warning(f"The {label} tab is not available in this studio."), None, None, queue=False)

    ctx.deferred.append(wire)


def stream_progress(ctx: "StudioContext", task: str, params: dict[str, Any], request: gr.Request | None,
                    status, progress_bar, preview, visitor: str):
    """Wait in the GPU queue (position and estimate shown), then run ``task`` yielding status/progress/preview
    updates; returns the TaskResult. Stop leaves the queue or stops at the next step; a page that goes away
    (Gradio closes this generator) leaves the queue and stops its running job.

    Use as ``result = yield from stream_progress(...)`` inside a Gradio generator handler.
    """
    stop = new_stop_event(request.session_hash if request else "")
    try:
        ticket = ctx.gpu_queue.enter(visitor, task)
    except UserError as error:
        forget_stop_event(stop)
        raise gr.Error(str(error))
    result = None
    try:
        for waiting in ctx.gpu_queue.wait(ticket, stop):
            yield {status: waiting.text(), progress_bar: 0.0}
        for item in stream_task(ctx.service, task, params, stop):
            if isinstance(item, Progress):
                yield {status: item.text, progress_bar: item.fraction,
                       **({preview: item.preview} if item.preview is not None else {})}
            else:
                result = item
    except gr.Error:
        raise
    except Exception as error:  # noqa: BLE001 - turned into a designer-readable message
        raise_user_error(error)
    finally:
        if result is None:
            stop.set()  # closed while running (page gone): the pipeline stops at its next step
        ctx.gpu_queue.leave(ticket)
        forget_stop_event(stop)
    return result


def run_to_gallery(ctx: "StudioContext", task: str, params: dict[str, Any], request: gr.Request | None,
                   visitor: str, out: dict[str, Any], folder: str):
    """Stream a task into the tab's status/progress/preview, then save and show the results (a generator)."""
    result = yield from stream_progress(ctx, task, params, request, out["status"], out["progress"], out["preview"],
                                        visitor)
    ctx.outputs.save(visitor, folder, result.images, result.params)
    seeds = [p["seed"] for p in result.params]
    note = result.extras.get("note") or ""
    text = (f"Done: {len(result.images)} image(s), seed {seeds[0]}" + (f"–{seeds[-1]}" if len(seeds) > 1 else "")
            + f" · mask: {result.extras.get('mask_source', '?')}" + (f" ({note})" if note else ""))
    yield {out["status"]: text, out["progress"]: 1.0, out["gallery"]: ctx.outputs.list(visitor, folder),
           out["last_seed"]: seeds[0]}


def raise_user_error(error: BaseException) -> None:
    """Known errors -> gr.Error with their sentence; a stop -> a "Stopped" message; others logged."""
    if isinstance(error, GenerationCancelled):
        raise gr.Error("Stopped.", title="Stopped")
    if isinstance(error, UserError):
        raise gr.Error(str(error))
    if isinstance(error, gr.Error):
        raise error
    logger.error("unexpected error", exc_info=error)
    raise gr.Error(f"Something went wrong ({type(error).__name__}: {error}). The details are in the studio log.")


# ------------------------------------------------------------------------------------------ editors
def editor_to_image_and_mask(value: Any, name: str = "canvas") -> tuple[Image.Image | None, Image.Image | None]:
    """An ImageEditor value -> (RGB image on white, L mask of what was painted).

    An untouched editor has ``layers == []`` and ``composite is None``: the background is the image and
    there is no mask. Strokes are the union of the layers' alpha.
    """
    if value is None:
        return None, None
    if not isinstance(value, dict):
        raise gr.Error(f"{name}: unexpected editor value {type(value).__name__}")
    background = _as_rgba(value.get("background"))
    composite = _as_rgba(value.get("composite"))
    layers = [layer for layer in (_as_rgba(x) for x in value.get("layers") or []) if layer is not None]
    base = composite or background
    if base is None and layers:
        base = layers[0]
    image = _on_white(base) if base is not None else None
    mask = None
    if layers:
        alpha = np.zeros(layers[0].size[::-1], dtype=np.uint8)
        for layer in layers:
            if layer.size != layers[0].size:
                layer = layer.resize(layers[0].size)
            alpha = np.maximum(alpha, np.asarray(layer.getchannel("A")))
        if alpha.max() > 0:
            mask = Image.fromarray(np.where(alpha > 0, 255, 0).astype(np.uint8), "L")
    return image, mask


def is_blank(image: Image.Image | None, tolerance: int = 8) -> bool:
    """True for None or an image with (almost) a single colour — an empty canvas."""
    if image is None:
        return True
    array = np.asarray(image.convert("L"), dtype=np.int16)
    return int(array.max() - array.min()) <= tolerance


def _as_rgba(item: Any) -> Image.Image | None:
    if item is None:
        return None
    if isinstance(item, Image.Image):
        return item.convert("RGBA")
    if isinstance(item, np.ndarray):
        if item.ndim == 2:
            return Image.fromarray(item.astype(np.uint8), "L").convert("RGBA")
        return Image.fromarray(item.astype(np.uint8)).convert("RGBA")
    if isinstance(item, (str, Path)):
        return Image.open(item).convert("RGBA")
    raise gr.Error(f"unexpected image value {type(item).__name__}")


def _on_white(image: Image.Image) -> Image.Image:
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")


def params_markdown(params: dict[str, Any]) -> str:
    keys = sorted(params)
    return "\n".join(f"- **{k}**: `{params[k]}`" for k in keys)


def load_params(path: str | None) -> dict[str, Any]:
    if not path:
        raise gr.Error("Choose a PNG made by Atelier first.")
    try:
        return read_png_params(path)
    except (ValueError, TypeError, OSError) as error:
        raise gr.Error(str(error)) from error


def seed_value(seed: Any) -> int:
    try:
        value = int(seed)
    except (TypeError, ValueError):
        raise gr.Error(f"Seed must be a whole number (-1 for random), got {seed!r}.")
    if value < -1 or value >= 2**32:
        raise gr.Error(f"Seed must be -1 (random) or between 0 and 4294967295, got {value}.")
    return value


def timer_elapsed(start: float) -> str:
    return f"{time.perf_counter() - start:.1f}s"


Callback = Callable[..., Any]
