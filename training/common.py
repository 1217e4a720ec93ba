"""Trainer-side helpers shared by every method: run folder, job-store updates, flags, metrics, checkpoints.

Run folder (``config.output_dir``)::

    config.yaml            resolved config (written by the runner, or by the CLI when run alone)
    train.log              stdout + stderr of the trainer (the runner redirects it)
    metrics.jsonl          one JSON object per optimizer step
    samples/step-00000050-0.png
    checkpoints/step-00000500/{model.safetensors, state.json, optimizer.pt}
    final/                 the exported model (method specific) + atelier_model.json
    result.json            final status written by the trainer

torch is imported lazily so the runner (UI process) can use the path helpers without loading it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from training.config import ConfigError, TrainConfig, config_to_dict, load_config, save_config
from training.jobstore import JobStore

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
SAMPLES_DIR = "samples"
FINAL_DIR = "final"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"
CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.pt"
MODEL_CARD = "atelier_model.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")

C = TypeVar("C", bound=TrainConfig)


# -- the model card (no torch) ---------------------------------------------------------------------------
CARD_REQUIRED = ("kind", "method", "weights", "base_model", "steps", "run_id")


def write_model_card(final_dir: str | Path, card: Mapping[str, Any]) -> Path:
    """Write ``final/atelier_model.json`` with the ONE schema every method uses.

    ``weights`` maps the studio checkpoint each file replaces (a preset checkpoint name such as
    ``garment_lem``, ``tryon_catvton``, ``dressing_slot_loras``) to the file, relative to ``final/``; it is
    empty for a model that is a whole folder (a garment model). ValueError names a missing key or a file
    that is not there.
    """
    final_dir = Path(final_dir)
    missing = [key for key in CARD_REQUIRED if key not in card]
    if missing:
        raise ValueError(f"model card is missing {', '.join(missing)}")
    if not isinstance(card["weights"], Mapping):
        raise ValueError("model card 'weights' must map checkpoint names to files")
    for name, file in card["weights"].items():
        if not (final_dir / file).is_file():
            raise ValueError(f"model card weights.{name}: {file} is not in {final_dir}")
    data = {"created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **card}
    path = final_dir / MODEL_CARD
    path.write_text(json.dumps(data, indent=2))
    return path


# -- path conventions (no torch) ------------------------------------------------------------------------
def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest step first (a folder counts once its state.json exists)."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def checkpoint_step(path: str | Path) -> int:
    match = _STEP_DIR.match(Path(path).name)
    if not match:
        raise ValueError(f"{path} is not a step-numbered checkpoint folder")
    return int(match.group(1))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def resolve_resume(resume_from: str | Path) -> Path:
    """A checkpoint folder from ``resume_from``: a checkpoint itself, or a run folder (its latest)."""
    path = Path(resume_from).expanduser()
    if (path / STATE_FILE).is_file():
        return path
    latest = latest_checkpoint(path) if path.is_dir() else None
    if latest is None:
        raise ConfigError(f"resume_from: {resume_from} is neither a checkpoint folder nor a run with checkpoints")
    return latest


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Parsed metrics.jsonl; a half-written last line is skipped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def tail(path: str | Path, lines: int = 50, max_bytes: int = 256 * 1024) -> str:
    """The last ``lines`` lines of a text file ('' when missing), reading at most ``max_bytes`` from the end."""
    path = Path(path)
    if not path.is_file():
        return ""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - max_bytes))
        data = handle.read().decode("utf-8", errors="replace")
    return "\n".join(data.splitlines()[-lines:])


# -- checkpoints ----------------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A loaded checkpoint: trainable tensors, the JSON state and (optionally) optimizer state."""

    path: Path
    step: int
    tensors: dict[str, Any]
    state: dict[str, Any]
    optimizer_state: dict[str, Any] | None


def write_checkpoint(
    run_dir: str | Path,
    step: int,
    tensors: Mapping[str, Any],
    state: Mapping[str, Any],
    optimizer_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``checkpoints/step-N`` atomically (temp folder + rename); never overwrites an existing step."""
    import torch
    from safetensors.torch import save_file

    target = Path(run_dir) / CHECKPOINTS_DIR / checkpoint_name(step)
    if (target / STATE_FILE).is_file():
        logger.info("checkpoint %s already exists; not overwritten", target.name)
        return target
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    flat = {name: tensor.detach().to("cpu").contiguous() for name, tensor in tensors.items()}
    save_file(flat, str(partial / MODEL_FILE), metadata={"step": str(step)})
    if optimizer_state is not None:
        torch.save(dict(optimizer_state), partial / OPTIMIZER_FILE)
    (partial / STATE_FILE).write_text(json.dumps({**state, "step": step, "saved_at": time.time()}, indent=2, default=str))
    if target.exists():  # a leftover without state.json (crash mid-rename); keep it aside, never delete data
        target.rename(target.with_name(f"{target.name}.incomplete-{int(time.time())}"))
    partial.rename(target)
    logger.info("checkpoint written: %s", target)
    return target


def load_checkpoint(path: str | Path, with_optimizer: bool = True) -> Checkpoint:
    """Read a checkpoint folder; pickled optimizer state only via ``torch.load(weights_only=True)``."""
    from pipelines.core.checkpoints import read_state_dict

    path = Path(path)
    state = json.loads((path / STATE_FILE).read_text())
    tensors = read_state_dict(path / MODEL_FILE)
    optimizer_state = None
    if with_optimizer and (path / OPTIMIZER_FILE).is_file():
        optimizer_state = read_state_dict(path / OPTIMIZER_FILE)
    return Checkpoint(path, int(state["step"]), tensors, state, optimizer_state)


def trainable_state(models: Mapping[str, Any]) -> dict[str, Any]:
    """``{"<prefix>.<param name>": tensor}`` for every parameter with ``requires_grad`` (full or LoRA)."""
    out = {}
    for prefix, model in models.items():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                out[f"{prefix}.{name}"] = parameter
    return out


def load_trainable_state(models: Mapping[str, Any], tensors: Mapping[str, Any], source: str) -> int:
    """Copy checkpoint tensors into the trainable parameters; every trainable one must be present."""
    import torch

    from pipelines.types import CheckpointError

    expected = trainable_state(models)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{source} does not match this training setup (LoRA/full, text encoder on/off?): "
            f"missing {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}"
        )
    with torch.no_grad():
        for name, parameter in expected.items():
            value = tensors[name]
            if tuple(value.shape) != tuple(parameter.shape):
                raise CheckpointError(f"{source}: {name} has shape {tuple(value.shape)}, model {tuple(parameter.shape)}")
            parameter.copy_(value.to(parameter.dtype))
    return len(expected)


# -- the context ----------------------------------------------------------------------------------------
@dataclass
class StepActions:
    """What the loop must do after an optimizer step."""

    save: bool = False
    sample: bool = False
    stop: bool = False  # stop requested (flag or signal): save, then leave the loop
    done: bool = False  # reached max_train_steps


def endless(loader):
    """Batches forever (epochs back to back)."""
    while True:
        yield from loader


class TrainerContext:
    """Connects one trainer process to its run folder and (optionally) the job store.

    Use as a context manager around the whole training: an exception marks the run failed (with the
    error), leaving normally marks it finished unless :meth:`finish` was called (e.g. stopped).
    """

    def __init__(self, config: TrainConfig, method: str, run_id: str | None = None, store_path: str | Path | None = None):
        if not config.output_dir:
            raise ConfigError("output_dir: required (the run folder)")
        self.config = config
        self.method = method
        self.run_id = run_id
        self.run_dir = Path(config.output_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Multi-process runs (accelerate launch / torchrun set RANK): only rank 0 talks to the store and
        # writes files; the flags it reads are shared with every rank in after_step.
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.is_main = self.rank == 0
        self.store = JobStore(store_path) if (store_path and run_id and self.is_main) else None
        self.start_step = 0
        self.total_steps = config.max_train_steps
        self.status: str | None = None
        self.exit_code = 0
        self._signal: int | None = None
        self._step_times: deque[float] = deque(maxlen=50)
        self._last_step_time: float | None = None
        self._last_saved_step: int | None = None
        self._previous_handlers: dict[int, Any] = {}

    # construction from the command line
    @classmethod
    def from_cli(cls, method: str, config_cls: type[C], argv: list[str] | None = None) -> "TrainerContext":
        """Parse ``--config FILE [--run-id ID --store DB] [--output-dir DIR]``, configure logging, load config."""
        parser = argparse.ArgumentParser(prog=f"python -m training.{method}", description=f"Atelier trainer: {method}")
        parser.add_argument("--config", required=True, help="YAML config file")
        parser.add_argument("--run-id", default=None, help="job-store run id (set by the runner)")
        parser.add_argument("--store", default=None, help="job-store SQLite file (set by the runner)")
        parser.add_argument("--output-dir", default=None, help="override output_dir (the run folder)")
        args = parser.parse_args(argv)
        if not logging.getLogger().handlers:  # a CLI process; inside pytest/an app keep their handlers
            logging.basicConfig(
                level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
            )
        config = load_config(config_cls, args.config)
        if args.output_dir:
            config.output_dir = args.output_dir
        if not config.output_dir:
            config.output_dir = str(Path(args.config).resolve().parent)
        context = cls(config, method, args.run_id, args.store)
        if context.is_main and not (context.run_dir / CONFIG_FILE).exists():
            save_config(config, context.run_dir / CONFIG_FILE)
        return context

    # lifecycle
    def __enter__(self) -> "TrainerContext":
        self.install_signal_handlers()
        if self.store is not None:
            now = time.time()
            self.store.transition(
                self.run_id, ("queued", "running"), status="running", pid=os.getpid(), pgid=os.getpgid(0),
                started_at=now,
            )
        logger.info("run %s (%s) in %s, pid %d", self.run_id or "-", self.method, self.run_dir, os.getpid())
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        if exc is None:
            if self.status is None:
                self.finish("finished")
            return False
        if isinstance(exc, KeyboardInterrupt):
            logger.warning("interrupted again before a clean stop; exiting without a final checkpoint")
            self.finish("stopped", error="interrupted (second signal) before a clean stop", exit_code=130)
            return False
        logger.exception("training failed")
        error = f"{type(exc).__name__}: {exc}"
        if type(exc).__name__ == "OutOfMemoryError":
            error = ("out of GPU memory. Try use_lora: true, gradient_checkpointing: true, mixed_precision: fp16, "
                     "use_8bit_adam: true, a smaller resolution or train_batch_size: 1. " + error)
        self.finish("failed", error=error, exit_code=1)
        return False

    def install_signal_handlers(self) -> None:
        """SIGINT/SIGTERM: finish the current step, save, exit 'stopped'. A second signal interrupts at once."""

        def handle(signum: int, frame: Any) -> None:
            if self._signal is not None:
                raise KeyboardInterrupt
            self._signal = signum
            logger.warning("received %s: stopping after the current step", signal.Signals(signum).name)

        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[signum] = signal.signal(signum, handle)

    def finish(self, status: str, error: str | None = None, exit_code: int | None = None) -> None:
        """Record the final state (store + result.json). First call wins."""
        if self.status is not None:
            return
        self.status = status
        self.exit_code = exit_code if exit_code is not None else (1 if status == "failed" else 0)
        if not self.is_main:
            if status == "failed":
                logger.error("rank %d failed: %s", self.rank, error)
            return
        result = {"status": status, "exit_code": self.exit_code, "error": error, "run_id": self.run_id,
                  "ended_at": time.time()}
        (self.run_dir / "result.json").write_text(json.dumps(result, indent=2))
        if self.store is not None:
            try:
                self.store.mark_final(self.run_id, status, exit_code=self.exit_code, error=error)
            except Exception:  # the store may be gone (deleted run); the result file still tells the story
                logger.exception("could not record the final state in the job store")
        logger.info("run %s ended: %s%s", self.run_id or "-", status, f" ({error})" if error else "")

    # progress
    @property
    def stop_requested(self) -> bool:
        if self._signal is not None:
            return True
        return bool(self.store is not None and self.store.read_flags(self.run_id)["stop"])

    @property
    def stopped_by_signal(self) -> bool:
        return self._signal is not None

    def begin(self, start_step: int, total_steps: int | None = None) -> None:
        """Announce where training starts (a resumed run starts at its checkpoint's step)."""
        self.start_step = start_step
        self.total_steps = total_steps or self.config.max_train_steps
        self._last_step_time = time.time()
        if self.store is not None:
            self.store.update(self.run_id, step=start_step, total_steps=self.total_steps)
        logger.info("training steps %d -> %d", start_step, self.total_steps)

    def after_step(self, step: int, loss: float, lr: float, **extra: Any) -> StepActions:
        """Record one optimizer step (metrics + store) and read the flags. ``step`` counts from 1."""
        now = time.time()
        if self._last_step_time is not None:
            self._step_times.append(now - self._last_step_time)
        self._last_step_time = now
        seconds_per_step = sum(self._step_times) / len(self._step_times) if self._step_times else 0.0
        row = {
            "step": step, "loss": loss, "lr": lr, "time": now,
            "eta_s": round(seconds_per_step * max(0, self.total_steps - step), 2),
            "gpu_mem_mb": _gpu_memory_mb(), **extra,
        }
        if self.is_main:
            with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
        actions = StepActions(done=step >= self.total_steps)
        flags = {"stop": False, "save_now": False, "sample_now": False}
        if self.store is not None:
            self.store.update(self.run_id, step=step)
            flags = self.store.read_flags(self.run_id)
            for flag in ("save_now", "sample_now"):
                if flags[flag]:
                    self.store.clear_flag(self.run_id, flag)
        flags = self._shared_flags({**flags, "signal": self._signal is not None})
        config = self.config
        actions.stop = flags["stop"] or flags["signal"]
        actions.save = (
            flags["save_now"] or actions.stop or actions.done
            or (config.save_every > 0 and step % config.save_every == 0)
        )
        actions.sample = flags["sample_now"] or (config.sample_every > 0 and step % config.sample_every == 0)
        if step == self.start_step + 1 or step % 10 == 0 or actions.done:
            logger.info("step %d/%d loss %.5f lr %.3g eta %.0fs", step, self.total_steps, loss, lr, row["eta_s"])
        return actions

    def _shared_flags(self, flags: dict[str, bool]) -> dict[str, bool]:
        """Every rank must take the same decision at the same step (or DDP deadlocks): max-reduce the flags."""
        if self.world_size <= 1:
            return flags
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return flags
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        names = sorted(flags)
        values = torch.tensor([float(flags[name]) for name in names], device=device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return {name: bool(value) for name, value in zip(names, values.tolist())}

    # files
    def save_checkpoint(
        self, step: int, tensors: Mapping[str, Any], optimizer_state: Mapping[str, Any] | None = None,
        extra_state: Mapping[str, Any] | None = None,
    ) -> Path:
        """``checkpoints/step-N`` with the trainable tensors, a JSON state (step, config) and optimizer state."""
        self._last_saved_step = step
        if not self.is_main:  # rank 0 holds the same (synchronised) weights and writes them
            return self.run_dir / CHECKPOINTS_DIR / checkpoint_name(step)
        state = {"method": self.method, "run_id": self.run_id, "config": config_to_dict(self.config),
                 **(extra_state or {})}
        path = write_checkpoint(self.run_dir, step, tensors, state, optimizer_state)
        self._last_saved_step = step
        return path

    @property
    def last_saved_step(self) -> int | None:
        return self._last_saved_step

    @property
    def samples_dir(self) -> Path:
        path = self.run_dir / SAMPLES_DIR
        path.mkdir(exist_ok=True)
        return path

    @property
    def final_dir(self) -> Path:
        return self.run_dir / FINAL_DIR


def _gpu_memory_mb() -> float | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**20, 1)


def run_cli(method: str, config_cls: type[C], train: Callable[[TrainerContext], None], argv: list[str] | None = None) -> int:
    """The ``__main__`` of a trainer: build the context, train inside it, return the exit code."""
    try:
        context = TrainerContext.from_cli(method, config_cls, argv)
    except ConfigError as error:
        logging.getLogger(method).error("invalid config: %s", error)
        return 2
    try:
        with context:
            train(context)
    except Exception:  # already logged and recorded by the context
        return context.exit_code or 1
    except KeyboardInterrupt:
        return context.exit_code or 130
    return context.exit_code
