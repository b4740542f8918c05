"""The gunicorn master's handling of PROMETHEUS_MULTIPROC_DIR, without gunicorn."""

from __future__ import annotations

import os
from pathlib import Path

from gateway import multiproc


def test_a_fresh_private_directory_per_start_removed_on_exit() -> None:
    env: dict[str, str] = {}
    directory = multiproc.prepare(env)
    try:
        assert directory.is_dir()
        assert list(directory.iterdir()) == []
        assert env[multiproc.MULTIPROC_ENV] == str(directory)
        assert env[multiproc.MASTER_PID_ENV] == str(os.getpid())
    finally:
        multiproc.cleanup(env)
    assert not directory.exists()


def test_an_operator_directory_is_kept_but_emptied(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"stale")
    (tmp_path / "notes.txt").write_text("not ours")
    env = {multiproc.MULTIPROC_ENV: str(tmp_path)}
    assert multiproc.prepare(env) == tmp_path
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]
    multiproc.cleanup(env)
    assert tmp_path.is_dir()


def test_a_re_executed_master_does_not_share_its_parents_directory(tmp_path: Path) -> None:
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "counter_1.db").write_bytes(b"the old master's worker")
    env = {
        multiproc.MULTIPROC_ENV: str(parent),
        multiproc.OWNED_DIR_ENV: str(parent),
        multiproc.MASTER_PID_ENV: "1",
    }
    fresh = multiproc.prepare(env)
    try:
        assert fresh != parent
        assert (parent / "counter_1.db").exists()
    finally:
        multiproc.cleanup(env)


def test_a_dead_worker_loses_its_live_gauges_but_keeps_its_counters(tmp_path: Path) -> None:
    names = ["gauge_livesum_42.db", "gauge_livemax_42.db", "counter_42.db", "gauge_livesum_43.db"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    multiproc.worker_exited(42, {multiproc.MULTIPROC_ENV: str(tmp_path)})
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "counter_42.db",
        "gauge_livesum_43.db",
    ]


def test_one_process_forgets_an_inherited_directory() -> None:
    env = {multiproc.MULTIPROC_ENV: "/somewhere", multiproc.MASTER_PID_ENV: "7", "OTHER": "x"}
    multiproc.forget(env)
    assert env == {"OTHER": "x"}
