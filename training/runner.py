"""Run manager: submit, queue, start, stop, resume and reconcile training runs.

Trainers run as detached child processes (own session and process group, output to ``<run>/train.log``);
the UI only calls this class and reads the job store and run folders. Nothing here imports torch or gradio.

Adding a training method is one line in :data:`METHODS`::

    "colour_adapter": MethodSpec("training.colour_adapter", "training.config:ColourAdapterConfig"),
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from training.common import (
    CONFIG_FILE,
    FINAL_DIR,
    LOG_FILE,
    MODEL_CARD,
    SAMPLES_DIR,
    latest_checkpoint,
    list_checkpoints,
    read_metrics,
    tail,
)
from training.config import TrainConfig, config_to_dict, load_config, save_config
from training.jobstore import ACTIVE_STATUSES, JobStore, RunRecord, new_run_id

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class MethodSpec:
    """A training method: its trainer module (``python -m <module>``), its config class and an optional
    preflight ``"module:function"`` called as ``preflight(config, run_dir)`` before the process starts
    (e.g. dataset validation); all given as import strings so registering imports nothing heavy."""

    module: str
    config_class: str
    preflight: str | None = None

    def load_config_class(self) -> type[TrainConfig]:
        return _import(self.config_class)


def _import(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


METHODS: dict[str, MethodSpec] = {
    "garment_finetune": MethodSpec(
        "training.garment_finetune", "training.config:GarmentFinetuneConfig", "training.runner:preflight_dataset"
    ),
    "colour_adapter": MethodSpec("training.colour_adapter", "training.config:ColourAdapterConfig", "training.garmentbench:preflight"),
    "gam": MethodSpec("training.gam", "training.config:GamConfig", "training.garmentbench:preflight"),
    "lem": MethodSpec("training.lem", "training.config:LemConfig", "training.garmentbench:preflight"),
    "dressing": MethodSpec("training.dressing", "training.config:DressingConfig", "training.dressing:preflight"),
    "tryon": MethodSpec("training.concat_inpaint_finetune", "training.config:TryOnFinetuneConfig", "training.concat_inpaint_finetune:preflight"),
    "tryoff": MethodSpec("training.concat_inpaint_finetune", "training.config:TryOffFinetuneConfig", "training.concat_inpaint_finetune:preflight"),
}


def preflight_dataset(config: TrainConfig, run_dir: Path) -> None:
    """Validate the dataset in the UI process so a bad file is reported before any trainer starts."""
    from training.datasets import load_dataset

    load_dataset(
        config.dataset,
        require_masks=bool(getattr(config, "require_masks", False)),
        min_size=int(getattr(config, "min_image_size", 8)),
        extract_to=run_dir / "dataset",
    )


def _process_state(pid: int) -> str | None:
    """'alive', 'zombie' or None (gone); reads /proc where available."""
    stat_path = Path(f"/proc/{pid}/stat")
    if stat_path.parent.parent.is_dir() and Path("/proc/self").exists():
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return "zombie" if fields[0] in ("Z", "X") else "alive"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return "alive"
    return "alive"


def _is_our_trainer(pid: int | None, run_id: str) -> bool:
    """True if ``pid`` is alive and is the trainer of ``run_id`` (guards against pid reuse)."""
    if not pid or _process_state(pid) != "alive":
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return run_id in cmdline.read_bytes().decode(errors="replace")
        except OSError:
            return False
    return True


def launch_command(python: str, module: str, config: dict[str, Any], arguments: list[str]) -> list[str]:
    """The trainer's argument list: ``python -m <module>`` for one process; ``accelerate launch --multi_gpu``
    for ``num_processes`` > 1 on GPUs (torch's own launcher with CPU processes when ``device: cpu``, which is
    how the multi-process bookkeeping is tested on machines without GPUs)."""
    processes = int(config.get("num_processes") or 1)
    if processes <= 1:
        return [python, "-m", module, *arguments]
    if config.get("device") == "cpu":
        return [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                "-m", module, *arguments]
    return [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--main_process_port", str(_free_port()), "-m", module, *arguments]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunManager:
    """Owns the queue and the trainer processes of one studio; safe to recreate after an app restart."""

    def __init__(
        self, store_path: str | Path, runs_root: str | Path, python: str = sys.executable, max_concurrent: int = 1,
        methods: dict[str, MethodSpec] | None = None, repo_root: str | Path = REPO_ROOT,
    ):
        self.store = JobStore(store_path)
        self.store_path = Path(store_path)
        self.runs_root = Path(runs_root)
        self.runs_root.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.max_concurrent = max_concurrent
        self.methods = METHODS if methods is None else methods
        self.repo_root = Path(repo_root)
        self.stop_timeout = 10.0  # seconds poll() waits after a non-blocking stop before signalling
        self._children: dict[str, subprocess.Popen] = {}
        # UI timers and click handlers may call in from several threads; launching and reaping are serialised
        self._lock = threading.RLock()

    # -- submitting -------------------------------------------------------------------------------------
    def validate(self, method: str, config: dict[str, Any] | str | Path) -> TrainConfig:
        """The typed config for ``method`` or a ConfigError/ValueError naming the problem."""
        if method not in self.methods:
            raise ValueError(f"method: unknown training method {method!r} (known: {', '.join(sorted(self.methods))})")
        return load_config(self.methods[method].load_config_class(), config)

    def submit(self, method: str, config: dict[str, Any] | str | Path, name: str | None = None, start: bool = True,
               resumed_from: str | None = None) -> str:
        """Validate, create the run folder + resolved config.yaml, queue the run; start it if the GPU is free."""
        if isinstance(config, dict):
            config = {key: value for key, value in config.items() if key != "output_dir"}
        typed = self.validate(method, config)
        run_id = new_run_id(method)
        run_dir = self.runs_root / run_id
        run_dir.mkdir(parents=True)
        typed.output_dir = str(run_dir.resolve())
        spec = self.methods[method]
        if spec.preflight:
            try:
                _import(spec.preflight)(typed, run_dir)
            except Exception:
                import shutil

                shutil.rmtree(run_dir, ignore_errors=True)
                raise
        save_config(typed, run_dir / CONFIG_FILE)
        self.store.create(method, run_dir, config_to_dict(typed), name=name, total_steps=typed.max_train_steps,
                          resumed_from=resumed_from, run_id=run_id)
        logger.info("submitted run %s (%s)", run_id, method)
        if start:
            self.start_next()
        return run_id

    def _busy(self) -> int:
        """Runs holding the GPU: active in the store, or our child processes still exiting."""
        active = {record.id for record in self.store.list(("running", "stopping"))}
        active |= {run_id for run_id, child in self._children.items() if child.poll() is None}
        return len(active)

    def start_next(self) -> list[str]:
        """Start queued runs (oldest first) while fewer than ``max_concurrent`` are running."""
        started = []
        with self._lock:
            for record in self.store.list("queued"):
                if self._busy() >= self.max_concurrent:
                    break
                if self._launch(record):
                    started.append(record.id)
        return started

    def _launch(self, record: RunRecord) -> bool:
        run_dir = Path(record.run_dir)
        if not self.store.transition(record.id, ("queued",), status="running", started_at=time.time(),
                                     exit_code=None, error=None):
            return False  # someone else started or cancelled it
        command = launch_command(
            self.python, self.methods[record.method].module, record.config or {},
            ["--config", str(run_dir / CONFIG_FILE), "--run-id", record.id, "--store", str(self.store_path.resolve())],
        )
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(self.repo_root)] + ([environment["PYTHONPATH"]] if environment.get("PYTHONPATH") else [])
        )
        try:
            with open(run_dir / LOG_FILE, "ab") as log:
                child = subprocess.Popen(
                    command, cwd=self.repo_root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True, env=environment,
                )
        except OSError as error:
            self.store.mark_final(record.id, "failed", error=f"could not start the trainer: {error}")
            logger.exception("could not start run %s", record.id)
            return False
        self._children[record.id] = child
        self.store.update(record.id, pid=child.pid, pgid=child.pid)
        logger.info("started run %s as pid %d", record.id, child.pid)
        return True

    # -- controlling ------------------------------------------------------------------------------------
    def stop(self, run_id: str, timeout: float = 10.0, wait: bool = True, grace: float = 5.0) -> RunRecord:
        """Stop a run: queued -> stopped at once; running -> stop flag (final checkpoint at the next step),
        then SIGINT, SIGTERM and SIGKILL to its process group if it does not exit. Always ends final when
        ``wait``; otherwise :meth:`poll` escalates after ``timeout``."""
        record = self.store.get(run_id)
        if record.status == "queued":
            self.store.mark_final(run_id, "stopped", error="cancelled before it started")
            return self.store.get(run_id)
        if record.is_final:
            return record
        self.store.set_flag(run_id, "stop")
        self.store.transition(run_id, ("running",), status="stopping")
        if not wait:
            return self.store.get(run_id)
        if not self._wait_exit(record, timeout):
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                logger.warning("run %s did not stop in time; sending %s", run_id, signal.Signals(signum).name)
                self._signal_group(record, signum)
                if self._wait_exit(record, grace if signum != signal.SIGKILL else 5.0):
                    break
        with self._lock:
            self._finalize(run_id)
        self.start_next()
        return self.store.get(run_id)

    def _signal_group(self, record: RunRecord, signum: int) -> None:
        if not _is_our_trainer(record.pid, record.id) and record.id not in self._children:
            return
        try:
            os.killpg(record.pgid or record.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _alive(self, record: RunRecord) -> bool:
        child = self._children.get(record.id)
        if child is not None:
            return child.poll() is None
        return _is_our_trainer(record.pid, record.id)

    def _wait_exit(self, record: RunRecord, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(record):
                return True
            time.sleep(0.1)
        return not self._alive(record)

    def request_save(self, run_id: str) -> None:
        """Ask the trainer for a checkpoint at its next step."""
        self._require_active(run_id)
        self.store.set_flag(run_id, "save_now")

    def request_sample(self, run_id: str) -> None:
        """Ask the trainer for sample images at its next step."""
        self._require_active(run_id)
        self.store.set_flag(run_id, "sample_now")

    def _require_active(self, run_id: str) -> RunRecord:
        record = self.store.get(run_id)
        if record.status not in ("running", "stopping"):
            raise ValueError(f"run {run_id} is {record.status}, not running")
        return record

    def resume(self, run_id: str, max_train_steps: int | None = None, start: bool = True) -> str:
        """A NEW run continuing ``run_id`` from its latest checkpoint (step count continues; the old run's
        files are untouched). ``max_train_steps`` raises the target, e.g. to train a finished run longer."""
        record = self.store.get(run_id)
        if record.is_active:
            raise ValueError(f"run {run_id} is {record.status}; stop it before resuming")
        checkpoint = latest_checkpoint(record.run_dir)
        if checkpoint is None:
            raise ValueError(f"run {run_id} has no checkpoint to resume from")
        config = dict(record.config)
        config.pop("output_dir", None)
        config["resume_from"] = str(checkpoint)
        if max_train_steps is not None:
            config["max_train_steps"] = max_train_steps
        name = f"{record.name or record.method} (resumed)"
        return self.submit(record.method, config, name=name, start=start, resumed_from=run_id)

    # -- bookkeeping ------------------------------------------------------------------------------------
    def _finalize(self, run_id: str) -> None:
        """The process has exited: make sure the run is final, using the exit code and the log tail."""
        record = self.store.get(run_id)
        child = self._children.pop(run_id, None)
        exit_code = child.wait() if child is not None else None
        if record.is_final:
            if record.exit_code is None and exit_code is not None:
                self.store.update(run_id, exit_code=exit_code)
            return
        stop_requested = bool(record.stop)
        log_tail = self.log_tail(run_id, 30)
        if stop_requested:
            status = "stopped"
            error = None if exit_code == 0 else (
                f"stopped by signal (exit code {exit_code}); last log lines:\n{log_tail}"
                if exit_code is not None else f"stopped; the process is gone. Last log lines:\n{log_tail}"
            )
        elif exit_code == 0:
            status, error = "finished", None
        else:
            status = "failed"
            how = f"exit code {exit_code}" if exit_code is not None else "the trainer process is gone (crash or restart)"
            error = f"{how}; last log lines:\n{log_tail}"
        self.store.mark_final(run_id, status, exit_code=exit_code, error=error)
        logger.info("run %s -> %s (exit code %s)", run_id, status, exit_code)

    def reconcile(self) -> list[str]:
        """On start-up: runs marked running/stopping whose trainer is gone become failed (or stopped if a
        stop was requested), with the log tail. Returns the ids that changed."""
        changed = []
        with self._lock:
            for record in self.store.list(("running", "stopping")):
                if self._alive(record) or self._launching(record):
                    continue
                self._finalize(record.id)
                changed.append(record.id)
        return changed

    @staticmethod
    def _launching(record: RunRecord, grace: float = 30.0) -> bool:
        """Marked running by another RunManager that has not recorded the pid yet."""
        return record.pid is None and record.started_at is not None and time.time() - record.started_at < grace

    def poll(self) -> list[RunRecord]:
        """Call periodically: reap exited trainers, escalate overdue stops, start queued runs. Returns the
        runs that are active afterwards."""
        with self._lock:
            self._reap()
        self.start_next()
        return self.store.list(ACTIVE_STATUSES)

    def _reap(self) -> None:
        for record in self.store.list(("running", "stopping")):
            if self._launching(record):
                continue
            if not self._alive(record):
                self._finalize(record.id)
            elif record.status == "stopping" and record.stop_requested_at:
                overdue = time.time() - record.stop_requested_at - self.stop_timeout
                if overdue > 0:
                    self._signal_group(record, signal.SIGTERM if overdue < self.stop_timeout else signal.SIGKILL)
        for run_id, child in list(self._children.items()):
            if child.poll() is not None and self.store.get(run_id).is_final:
                self._children.pop(run_id, None)

    # -- reading ----------------------------------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord:
        return self.store.get(run_id)

    def list_runs(self, status: str | None = None, method: str | None = None) -> list[RunRecord]:
        return self.store.list(status, method)

    def run_dir(self, run_id: str) -> Path:
        return Path(self.store.get(run_id).run_dir)

    def log_tail(self, run_id: str, n: int = 50) -> str:
        return tail(self.run_dir(run_id) / LOG_FILE, n)

    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        return read_metrics(self.run_dir(run_id))

    def samples(self, run_id: str) -> list[Path]:
        folder = self.run_dir(run_id) / SAMPLES_DIR
        return sorted(folder.glob("*.png")) if folder.is_dir() else []

    def checkpoints(self, run_id: str) -> list[Path]:
        return list_checkpoints(self.run_dir(run_id))

    def final_weights(self, run_id: str) -> Path | None:
        """The exported model folder (with atelier_model.json) once the run finished, else None."""
        final = self.run_dir(run_id) / FINAL_DIR
        return final if (final / MODEL_CARD).is_file() else None

    def wait(self, run_id: str, timeout: float, interval: float = 0.2,
             until: Callable[[RunRecord], bool] | None = None) -> RunRecord:
        """Poll until ``until(record)`` (default: the run is final) or ``timeout``; returns the last record."""
        until = until or (lambda record: record.is_final)
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            record = self.store.get(run_id)
            if until(record) or time.monotonic() > deadline:
                return record
            time.sleep(interval)
