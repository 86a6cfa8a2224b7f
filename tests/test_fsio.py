"""dmac_core.fsio: whole-file replacement that a killed writer cannot half-do, JSON-lines
caches whose reader skips a torn line, and an exclusive lock between processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dmac_core.fsio import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    exclusive_lock,
    open_locked,
    read_jsonl,
)


def test_a_replacement_leaves_no_temporary_file_and_keeps_the_old_content_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dmac_core.fsio as fsio

    target = tmp_path / "run.json"
    atomic_write_json(target, {"state": "queued", "when": tmp_path})  # a Path is written as its str
    assert json.loads(target.read_text()) == {"state": "queued", "when": str(tmp_path)}

    def half_then_full_disk(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(fsio, "write_all", half_then_full_disk)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(target, {"state": "running"})
    assert json.loads(target.read_text())["state"] == "queued"  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temporary left behind


def test_a_private_file_is_never_readable_by_others(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        atomic_write_text(tmp_path / "users.toml", "[auth.users]\n", mode=0o600)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "users.toml").stat().st_mode) == 0o600


def test_appends_start_on_a_fresh_line_after_a_torn_write_and_the_reader_skips_it(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "rewrites.jsonl"
    append_jsonl(cache, [{"key": "a", "answer": "one"}])
    with open(cache, "ab") as handle:
        handle.write(b'{"key": "b", "ans')  # a writer killed mid-line
    append_jsonl(cache, [{"key": "c", "answer": "three"}, ["not", "an", "object"]])
    assert read_jsonl(cache) == [{"key": "a", "answer": "one"}, {"key": "c", "answer": "three"}]
    assert cache.read_bytes().count(b"\n") == 4
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_the_lock_excludes_another_process_until_released(tmp_path: Path) -> None:
    lock = tmp_path / ".train.lock"
    probe = ("import sys; from dmac_core.fsio import open_locked\n"
             "try:\n    open_locked(sys.argv[1], blocking=False)\nexcept BlockingIOError:\n    sys.exit(3)\n")

    def other_process_gets_it() -> bool:
        code = subprocess.run([sys.executable, "-c", probe, str(lock)], cwd=Path(__file__).parent.parent).returncode
        assert code in (0, 3)
        return code == 0

    with exclusive_lock(lock):
        assert not other_process_gets_it()
    assert other_process_gets_it()
    fd = open_locked(lock, blocking=False)
    try:
        assert not other_process_gets_it()
    finally:
        os.close(fd)
