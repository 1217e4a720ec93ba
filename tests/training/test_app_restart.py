"""Killing the APP (not the trainer) loses no run: the detached trainer goes on, a restarted app adopts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.training.test_datasets import make_garment_dataset
from tests.training.test_runner import START_TIMEOUT, tiny_config
from training.runner import RunManager

REPO = Path(__file__).resolve().parents[2]


def test_app_killed_mid_run_then_restarted(tiny_models, tmp_path):
    data = make_garment_dataset(tmp_path / "data")
    config = tiny_config(tiny_models, data, max_train_steps=12, save_every=4)
    # The "app": a process that owns a RunManager, submits a run, reports its id, then waits forever.
    app = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import json, sys, time
            from training.runner import RunManager
            manager = RunManager({str(tmp_path / 'jobs.db')!r}, {str(tmp_path / 'runs')!r})
            run_id = manager.submit("garment_finetune", json.loads(sys.argv[1]))
            print(run_id, flush=True)
            while True:
                manager.poll(); time.sleep(0.5)
        """), json.dumps(config)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    run_id = None
    try:
        run_id = app.stdout.readline().strip()
        restarted = RunManager(tmp_path / "jobs.db", tmp_path / "runs")
        record = restarted.wait(run_id, START_TIMEOUT, until=lambda r: r.step >= 2 or r.is_final)
        assert record.status == "running", restarted.log_tail(run_id)
        app.send_signal(signal.SIGKILL)  # the studio dies mid-run
        app.wait(10)

        # start-up of the new app: reconcile keeps a live trainer running; polling sees it finish
        assert run_id not in restarted.reconcile()
        assert restarted.get(run_id).status == "running"
        record = restarted.wait(run_id, 240, until=lambda r: r.is_final)
        assert record.status == "finished", restarted.log_tail(run_id)
        assert record.step == 12
        steps = [path.name for path in restarted.checkpoints(run_id)]
        assert steps[:3] == ["step-00000004", "step-00000008", "step-00000012"], steps
        assert restarted.final_weights(run_id) is not None
    finally:
        if app.poll() is None:
            app.kill()
        if run_id:
            record = RunManager(tmp_path / "jobs.db", tmp_path / "runs").get(run_id)
            if record.pgid and not record.is_final:
                os.killpg(record.pgid, signal.SIGKILL)
