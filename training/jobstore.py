"""The SQLite job store shared by the runner (UI process) and the trainer processes.

One row per run. WAL mode so the UI can read while a trainer writes; a fresh connection per call (safe
across threads and processes) with a busy timeout so concurrent writers wait instead of failing.
Timestamps are Unix seconds (float).
"""

from __future__ import annotations

import json
import logging
import secrets
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable

logger = logging.getLogger(__name__)

ACTIVE_STATUSES = ("queued", "running", "stopping")
FINAL_STATUSES = ("finished", "stopped", "failed")
STATUSES = ACTIVE_STATUSES + FINAL_STATUSES
FLAGS = ("stop", "save_now", "sample_now")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    method TEXT NOT NULL,
    name TEXT,
    status TEXT NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL DEFAULT 0,
    pid INTEGER,
    pgid INTEGER,
    exit_code INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    updated_at REAL NOT NULL,
    run_dir TEXT NOT NULL,
    config_json TEXT NOT NULL DEFAULT '{}',
    stop INTEGER NOT NULL DEFAULT 0,
    save_now INTEGER NOT NULL DEFAULT 0,
    sample_now INTEGER NOT NULL DEFAULT 0,
    stop_requested_at REAL,
    error TEXT,
    resumed_from TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
"""


@dataclass
class RunRecord:
    """One row of ``runs``."""

    id: str
    method: str
    name: str | None
    status: str
    step: int
    total_steps: int
    pid: int | None
    pgid: int | None
    exit_code: int | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    updated_at: float
    run_dir: str
    config_json: str
    stop: int
    save_now: int
    sample_now: int
    stop_requested_at: float | None
    error: str | None
    resumed_from: str | None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json or "{}")

    @property
    def progress(self) -> float:
        """Fraction of steps done, 0..1."""
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0


_COLUMNS = [f.name for f in fields(RunRecord)]
_UPDATABLE = set(_COLUMNS) - {"id", "created_at"}


def new_run_id(method: str, now: float | None = None) -> str:
    """``20261122-043512-garment_finetune-ab12``: sortable by time, readable, unique."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    return f"{stamp}-{method}-{secrets.token_hex(2)}"


class JobStore:
    """Runs table in one SQLite file. Every method opens its own short-lived connection."""

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self.path = Path(path)
        self.timeout = timeout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(_SCHEMA)
            connection.commit()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
        connection.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
        connection.row_factory = sqlite3.Row
        return connection

    def _execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        with closing(self._connect()) as connection:
            cursor = connection.execute(sql, tuple(params))
            return cursor.rowcount

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[RunRecord]:
        with closing(self._connect()) as connection:
            rows = connection.execute(sql, tuple(params)).fetchall()
        return [RunRecord(**{key: row[key] for key in _COLUMNS}) for row in rows]

    # -- rows -------------------------------------------------------------------------------------------
    def create(
        self,
        method: str,
        run_dir: str | Path,
        config: dict[str, Any] | None = None,
        name: str | None = None,
        total_steps: int = 0,
        status: str = "queued",
        resumed_from: str | None = None,
        run_id: str | None = None,
    ) -> RunRecord:
        """Insert a run (status ``queued`` by default) and return it."""
        if status not in STATUSES:
            raise ValueError(f"status: {status!r} is not one of {STATUSES}")
        now = time.time()
        run_id = run_id or new_run_id(method, now)
        self._execute(
            "INSERT INTO runs (id, method, name, status, total_steps, created_at, updated_at, run_dir, config_json,"
            " resumed_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, method, name, status, int(total_steps), now, now, str(run_dir),
             json.dumps(config or {}, default=str), resumed_from),
        )
        return self.get(run_id)

    def get(self, run_id: str) -> RunRecord:
        """The run ``run_id``; ``KeyError`` naming it when unknown."""
        rows = self._query("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise KeyError(f"unknown run id {run_id!r}")
        return rows[0]

    def list(self, status: str | Iterable[str] | None = None, method: str | None = None) -> list[RunRecord]:
        """Runs oldest first, optionally filtered by status (one or several) and method."""
        clauses, params = [], []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            params += statuses
        if method is not None:
            clauses.append("method = ?")
            params.append(method)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self._query(f"SELECT * FROM runs {where} ORDER BY created_at, id", params)

    def update(self, run_id: str, **values: Any) -> None:
        """Set columns by name (``updated_at`` is refreshed); unknown column names raise ``ValueError``."""
        bad = set(values) - _UPDATABLE
        if bad:
            raise ValueError(f"cannot update column(s) {sorted(bad)}")
        if "status" in values and values["status"] not in STATUSES:
            raise ValueError(f"status: {values['status']!r} is not one of {STATUSES}")
        values.setdefault("updated_at", time.time())
        assignments = ", ".join(f"{key} = ?" for key in values)
        if self._execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*values.values(), run_id)) == 0:
            raise KeyError(f"unknown run id {run_id!r}")

    def transition(self, run_id: str, from_statuses: Iterable[str], **values: Any) -> bool:
        """Atomically apply ``values`` only if the run's status is in ``from_statuses``; True if applied."""
        bad = set(values) - _UPDATABLE
        if bad:
            raise ValueError(f"cannot update column(s) {sorted(bad)}")
        values.setdefault("updated_at", time.time())
        allowed = list(from_statuses)
        assignments = ", ".join(f"{key} = ?" for key in values)
        sql = f"UPDATE runs SET {assignments} WHERE id = ? AND status IN ({', '.join('?' * len(allowed))})"
        return self._execute(sql, (*values.values(), run_id, *allowed)) > 0

    def delete(self, run_id: str) -> None:
        self._execute("DELETE FROM runs WHERE id = ?", (run_id,))

    # -- flags ------------------------------------------------------------------------------------------
    def set_flag(self, run_id: str, flag: str) -> None:
        """Raise ``flag`` (stop / save_now / sample_now); the trainer reads it at its next step."""
        self._check_flag(flag)
        extra = ", stop_requested_at = COALESCE(stop_requested_at, ?)" if flag == "stop" else ""
        params: tuple = (time.time(), time.time(), run_id) if flag == "stop" else (time.time(), run_id)
        if self._execute(f"UPDATE runs SET {flag} = 1, updated_at = ?{extra} WHERE id = ?", params) == 0:
            raise KeyError(f"unknown run id {run_id!r}")

    def clear_flag(self, run_id: str, flag: str) -> None:
        self._check_flag(flag)
        self._execute(f"UPDATE runs SET {flag} = 0, updated_at = ? WHERE id = ?", (time.time(), run_id))

    def read_flags(self, run_id: str) -> dict[str, bool]:
        """``{"stop": bool, "save_now": bool, "sample_now": bool}``."""
        record = self.get(run_id)
        return {flag: bool(getattr(record, flag)) for flag in FLAGS}

    @staticmethod
    def _check_flag(flag: str) -> None:
        if flag not in FLAGS:
            raise ValueError(f"flag: {flag!r} is not one of {FLAGS}")

    # -- end of a run -----------------------------------------------------------------------------------
    def mark_final(
        self, run_id: str, status: str, exit_code: int | None = None, error: str | None = None,
        only_if_active: bool = True,
    ) -> bool:
        """Put the run in a final state; by default only if it is not final yet (first writer wins).

        Returns True when this call changed the row.
        """
        if status not in FINAL_STATUSES:
            raise ValueError(f"status: {status!r} is not a final status {FINAL_STATUSES}")
        now = time.time()
        values = {"status": status, "exit_code": exit_code, "error": error, "ended_at": now, "updated_at": now}
        if only_if_active:
            return self.transition(run_id, ACTIVE_STATUSES, **values)
        self.update(run_id, **values)
        return True
