"""The SQLite job store: rows, flags, final states, concurrent access."""

from __future__ import annotations

import threading

import pytest

from training.jobstore import JobStore, new_run_id


def test_run_id_format():
    run_id = new_run_id("garment_finetune", now=0)
    stamp, method_and_suffix = run_id[:15], run_id[16:]
    assert stamp[8] == "-" and stamp.replace("-", "").isdigit()
    assert method_and_suffix.startswith("garment_finetune-") and len(method_and_suffix.rsplit("-", 1)[1]) == 4


def test_create_get_list_update(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    first = store.create("garment_finetune", tmp_path / "a", {"lr": 1e-5}, name="sweater", total_steps=10)
    second = store.create("other", tmp_path / "b", total_steps=5)
    assert first.status == "queued" and first.config == {"lr": 1e-5} and first.step == 0
    assert [r.id for r in store.list()] == [first.id, second.id]
    assert [r.id for r in store.list(method="other")] == [second.id]
    store.update(first.id, status="running", step=4, pid=123)
    record = store.get(first.id)
    assert (record.status, record.step, record.pid, record.progress) == ("running", 4, 123, 0.4)
    assert [r.id for r in store.list(("running", "stopping"))] == [first.id]
    with pytest.raises(ValueError, match="status"):
        store.update(first.id, status="exploded")
    with pytest.raises(ValueError, match="cannot update"):
        store.update(first.id, nonsense=1)
    with pytest.raises(KeyError, match="nope"):
        store.get("nope")


def test_flags_and_final_state(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    run = store.create("m", tmp_path / "r", status="running")
    assert store.read_flags(run.id) == {"stop": False, "save_now": False, "sample_now": False}
    store.set_flag(run.id, "save_now")
    store.set_flag(run.id, "stop")
    assert store.read_flags(run.id) == {"stop": True, "save_now": True, "sample_now": False}
    assert store.get(run.id).stop_requested_at is not None
    store.clear_flag(run.id, "save_now")
    assert not store.read_flags(run.id)["save_now"]
    with pytest.raises(ValueError, match="flag"):
        store.set_flag(run.id, "explode")
    # first final state wins (the trainer's own verdict is not overwritten by the reaper)
    assert store.mark_final(run.id, "stopped", exit_code=0)
    assert not store.mark_final(run.id, "failed", exit_code=1, error="late")
    record = store.get(run.id)
    assert (record.status, record.exit_code, record.error, record.is_final) == ("stopped", 0, None, True)
    assert record.ended_at is not None
    with pytest.raises(ValueError, match="final"):
        store.mark_final(run.id, "running")


def test_concurrent_writers(tmp_path):
    """Threads with their own connections (like the UI and trainers) do not lose updates or lock up."""
    store = JobStore(tmp_path / "jobs.db")
    runs = [store.create("m", tmp_path / str(i), status="running") for i in range(4)]
    errors = []

    def work(run_id):
        try:
            for step in range(1, 41):
                store.update(run_id, step=step)
                store.read_flags(run_id)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(run.id,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert [store.get(run.id).step for run in runs] == [40] * 4
