"""Atelier: start the studio.  ``python app.py --help``

Wiring only: read settings, build the model registry/service and the training runner, build the UI,
launch. Models load lazily on first use, so the page is up in seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

REPO = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Atelier fashion design studio")
    parser.add_argument("--preset", default=os.environ.get("ATELIER_PRESET", "auto"),
                        help="model preset: sd15 (real weights), mini (small models trained offline), tiny "
                             "(random weights, for tests), or auto (sd15 on a CUDA GPU that can get its weights, "
                             "else mini when shipped, else tiny)")
    parser.add_argument("--host", default=os.environ.get("ATELIER_HOST", "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("ATELIER_PORT", os.environ.get("GRADIO_SERVER_PORT", 7860))))
    parser.add_argument("--outputs", default=os.environ.get("ATELIER_OUTPUTS", str(REPO / "outputs")))
    parser.add_argument("--runs", default=os.environ.get("ATELIER_RUNS", str(REPO / "runs")))
    parser.add_argument("--models_dir", default=os.environ.get("ATELIER_MODELS_DIR", str(REPO / "models")))
    parser.add_argument("--device", default=os.environ.get("ATELIER_DEVICE"))
    parser.add_argument("--dtype", default=os.environ.get("ATELIER_DTYPE"))
    parser.add_argument("--memory_mode", default=os.environ.get("ATELIER_MEMORY_MODE", "auto"),
                        choices=["auto", "resident", "model_offload"],
                        help="auto: every model resident from 16 GiB free GPU memory, else only the running task's")
    parser.add_argument("--memory_cap_gb", type=float, default=None,
                        help="cap this process's CUDA memory (try a small GPU on a big one)")
    parser.add_argument("--vae_tiling", action="store_true", help="decode large images in tiles (less memory)")
    parser.add_argument("--max_file_size", default="50mb")
    parser.add_argument("--no_run_history", action="store_true", help="do not keep designs in browser storage")
    return parser.parse_args(argv)


def choose_preset(name: str) -> str:
    """``auto``: the real models where they can run (a CUDA GPU, weights cached or the Hub reachable), else the
    shipped GarmentBench-mini models, else the random tiny set."""
    if name != "auto":
        return name
    import torch

    from pipelines.core.presets import available_presets
    from pipelines.service import StudioService

    if torch.cuda.is_available() and StudioService.preset_problems_of("sd15") is None:
        return "sd15"
    if "mini" in available_presets() and StudioService.preset_problems_of("mini") is None:
        return "mini"
    return "tiny"


def build(args: argparse.Namespace):
    from pipelines.service import StudioService
    from studio.components import OutputStore
    from studio.ui import build_ui

    service = StudioService(choose_preset(args.preset), device=args.device, dtype=args.dtype,
                            models_dir=args.models_dir, memory_mode=args.memory_mode,
                            memory_cap_gb=args.memory_cap_gb, vae_tiling=args.vae_tiling)
    runs = None
    try:
        from training.runner import RunManager

        runs = RunManager(Path(args.runs) / "jobs.sqlite", Path(args.runs))
        runs.reconcile()
    except ImportError as error:  # the training runner is optional for the design tabs
        logging.getLogger("atelier").warning("training runner unavailable: %s", error)
    problem = service.preset_problems()
    if problem:
        logging.getLogger("atelier").warning(problem)
    outputs = OutputStore(args.outputs)
    return build_ui(service, outputs, runs), outputs, runs


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    demo, outputs, runs = build(args)
    allowed = [str(outputs.root)] + ([str(Path(args.runs).resolve())] if runs is not None else [])
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, allowed_paths=allowed,
        max_file_size=args.max_file_size, run_history=not args.no_run_history,
        footer_links=["api", "settings"], show_error=True,
    )


if __name__ == "__main__":
    main()
