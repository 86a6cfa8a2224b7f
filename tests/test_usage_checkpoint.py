"""The usage counter's checkpoint: a new counter (a restarted process, or another process on the
same data directory) starts from it only when it describes the log as it is, and then counts
exactly what a recount of the whole month would, without rereading the month."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest

import dmac_core.serving.usage as usage_module
from dmac_core.config import Config
from dmac_core.logs.maintenance import edit_lines
from dmac_core.logs.store import LearningStore
from dmac_core.serving.router import ModelManager
from dmac_core.serving.usage import Usage, UsageCounter
from dmac_core.serving.usage_checkpoint import _windows

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=timezone.utc)
MODELS = ("gemini", "deepseek_api", "deepseek")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _ts(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _log(store: LearningStore, n: int, start: int = 0, now: datetime = NOW) -> None:
    """``n`` interactions of varied kinds: three models, evaluation and teacher calls, calls that
    never reached the server, yesterday's, and some within the last minute (out of time order)."""
    for i in range(start, start + n):
        if i % 11 == 0:
            at = now - timedelta(days=1, minutes=i % 50)  # yesterday's (same month)
        elif i % 5 == 0:
            at = now - timedelta(seconds=(i * 7) % 90)  # around the last minute's edge
        else:
            at = now - timedelta(hours=11, minutes=-(i % 600))
        extra = {"purpose": ("evaluation", "teacher", "chat")[i % 4]} if i % 4 < 3 else {}
        if i % 13 == 0:
            extra["request_sent"] = False
        store.append_interaction(
            ts=_ts(at), model=MODELS[i % 3], prompt=f"question {i} " + "x" * 300, response=f"answer {i}",
            tokens_in=i % 17, tokens_out=i % 23, **extra)


def _usage(counter: UsageCounter) -> dict[str, Usage]:
    return {model: counter.usage(model) for model in MODELS}


def _from_scratch(store: LearningStore, clock: Callable[[], datetime]) -> dict[str, Usage]:
    return _usage(UsageCounter(store, clock))


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The byte count of every chunk the counter hands to the line parser."""
    sizes: list[int] = []
    real = usage_module.parse_lines

    def counting(chunk: bytes, required: tuple[str, ...]) -> tuple[list[dict], int]:
        sizes.append(len(chunk))
        return real(chunk, required)

    monkeypatch.setattr(usage_module, "parse_lines", counting)
    return sizes


def _setup(tmp_path: Path, n: int = 400) -> tuple[LearningStore, Clock, Path, Path]:
    store = LearningStore(tmp_path, fsync=False)
    clock = Clock()
    _log(store, n)
    [log_path] = store.month_files("interactions")
    return store, clock, log_path, tmp_path / "usage" / "counter.json"


def test_a_restart_counts_exactly_like_a_recount_and_reads_only_the_tail(tmp_path: Path, parsed: list[int]) -> None:
    store, clock, log_path, checkpoint = _setup(tmp_path)
    assert log_path.stat().st_size > 200_000  # large enough for the sampled fingerprint
    assert len(_windows(log_path.stat().st_size)) == 18
    first = UsageCounter(store, clock, checkpoint_path=checkpoint)
    before = _usage(first)
    assert checkpoint.is_file()  # written after the catch-up from scratch
    assert before == _from_scratch(store, clock)
    assert before["gemini"].requests_today > 50 and before["gemini"].requests_by_purpose
    assert before["gemini"].requests_last_minute > 0
    size_at_checkpoint = log_path.stat().st_size

    _log(store, 30, start=400)  # appended after the checkpoint, before the restart
    clock.now += timedelta(seconds=20)  # some of the last minute's calls age out meanwhile
    parsed.clear()
    restarted = _usage(UsageCounter(store, clock, checkpoint_path=checkpoint))
    assert parsed == [log_path.stat().st_size - size_at_checkpoint]  # only the tail was parsed
    assert restarted == _from_scratch(store, clock)
    assert restarted != before  # the appended calls and the aged-out window both show


def test_without_a_checkpoint_a_new_counter_rereads_the_month(tmp_path: Path, parsed: list[int]) -> None:
    store, clock, log_path, checkpoint = _setup(tmp_path, n=40)
    _usage(UsageCounter(store, clock))  # no checkpoint path: nothing saved
    assert not checkpoint.exists()
    parsed.clear()
    _usage(UsageCounter(store, clock, checkpoint_path=checkpoint))
    assert parsed == [log_path.stat().st_size]


def test_a_rewritten_log_is_recounted(tmp_path: Path, parsed: list[int]) -> None:
    store, clock, log_path, checkpoint = _setup(tmp_path)
    _usage(UsageCounter(store, clock, checkpoint_path=checkpoint))
    # A user's data deleted (atomic replace), then enough appended to pass the checkpoint's offset
    assert edit_lines(log_path, lambda raw: None if b"question 7 " in raw else raw) == 1
    _log(store, 40, start=400)
    parsed.clear()
    restarted = _usage(UsageCounter(store, clock, checkpoint_path=checkpoint))
    assert parsed == [log_path.stat().st_size]  # counted from scratch
    assert restarted == _from_scratch(store, clock)


def test_a_log_rewritten_in_place_is_told_by_its_fingerprint(tmp_path: Path, parsed: list[int]) -> None:
    store, clock, log_path, checkpoint = _setup(tmp_path)
    _usage(UsageCounter(store, clock, checkpoint_path=checkpoint))
    inode = log_path.stat().st_ino
    # Same inode (what a reused inode number looks like): one line dropped, the file longer again
    lines = log_path.read_bytes().split(b"\n")
    with open(log_path, "wb") as handle:  # truncates in place
        handle.write(b"\n".join(lines[:100] + lines[101:]))
    _log(store, 40, start=400)
    assert log_path.stat().st_ino == inode
    parsed.clear()
    restarted = _usage(UsageCounter(store, clock, checkpoint_path=checkpoint))
    assert parsed == [log_path.stat().st_size]
    assert restarted == _from_scratch(store, clock)


def test_a_checkpoint_of_another_day_or_a_later_time_is_not_used(tmp_path: Path, parsed: list[int]) -> None:
    store, clock, log_path, checkpoint = _setup(tmp_path, n=60)
    _usage(UsageCounter(store, clock, checkpoint_path=checkpoint))
    size = log_path.stat().st_size

    clock.now = NOW + timedelta(days=1)  # the next day, same month: today's counts start again
    parsed.clear()
    next_day = _usage(UsageCounter(store, clock, checkpoint_path=checkpoint))
    assert parsed == [size] and next_day == _from_scratch(store, clock)
    assert json.loads(checkpoint.read_text())  # and the recount saved the new day's checkpoint

    clock.now = NOW + timedelta(days=1) - timedelta(seconds=30)  # the clock went back
    parsed.clear()
    back = _usage(UsageCounter(store, clock, checkpoint_path=checkpoint))
    assert parsed == [size] and back == _from_scratch(store, clock)


@pytest.mark.parametrize("damage", ["torn", "garbage", "counts changed", "empty"])
def test_a_torn_or_corrupt_checkpoint_is_ignored(tmp_path: Path, parsed: list[int], damage: str) -> None:
    store, clock, log_path, checkpoint = _setup(tmp_path, n=60)
    _usage(UsageCounter(store, clock, checkpoint_path=checkpoint))
    data = checkpoint.read_bytes()
    if damage == "torn":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = b"\x00\xff not json"
    elif damage == "counts changed":  # valid JSON, a count edited: the checksum no longer matches
        envelope = json.loads(data)
        body = json.loads(envelope["checkpoint"])
        body["requests"]["gemini"] -= 5
        envelope["checkpoint"] = json.dumps(body, sort_keys=True, separators=(",", ":"))
        data = json.dumps(envelope).encode()
    else:
        data = b""
    checkpoint.write_bytes(data)
    parsed.clear()
    restarted = _usage(UsageCounter(store, clock, checkpoint_path=checkpoint))
    assert parsed == [log_path.stat().st_size]
    assert restarted == _from_scratch(store, clock)


def test_checkpoints_follow_new_rows_and_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, clock, _, checkpoint = _setup(tmp_path, n=20)
    counter = UsageCounter(store, clock, checkpoint_path=checkpoint, checkpoint_every_s=3600,
                           checkpoint_every_rows=5)
    counter.usage("gemini")

    def saved_offset() -> int:
        return json.loads(json.loads(checkpoint.read_bytes())["checkpoint"])["offset"]

    first = saved_offset()
    _log(store, 4, start=20)
    counter.usage("gemini")
    assert saved_offset() == first  # 4 new rows: not yet
    _log(store, 1, start=24)
    counter.usage("gemini")
    assert saved_offset() == counter._offset > first  # the fifth: saved
    monotonic = usage_module.time.monotonic()
    monkeypatch.setattr(usage_module.time, "monotonic", lambda: monotonic + 7200)  # an hour later
    _log(store, 1, start=25)
    counter.usage("gemini")
    assert saved_offset() == counter._offset  # one row, but the interval passed


def test_caps_hold_across_a_restart_of_the_router(tmp_path: Path, parsed: list[int]) -> None:
    config = Config.model_validate({
        "data_dir": str(tmp_path), "models": {"deepseek": {"kind": "local", "enabled": False},
                                              "gemini": {"kind": "gemini"}},
        "routing": {"order": ["gemini"], "caps": {"gemini": {"requests_per_day": 31}}},
        "storage": {"fsync": False}})
    store = LearningStore(tmp_path, fsync=False)
    now = datetime.now(timezone.utc)
    for i in range(30):
        store.append_interaction(ts=_ts(now - timedelta(seconds=120 + i)), model="gemini", prompt=f"q{i}",
                                 response="a")
    manager = ModelManager(config, store, {})
    assert manager.usage_now("gemini").requests_today == 30
    assert (tmp_path / "usage" / "counter.json").is_file()
    [log_path] = store.month_files("interactions")
    size = log_path.stat().st_size
    store.append_interaction(model="gemini", prompt="the 31st", response="a")  # after the checkpoint
    parsed.clear()
    restarted = ModelManager(config, store, {})
    usage = restarted.usage_now("gemini")
    assert parsed == [log_path.stat().st_size - size]  # the one new line
    assert usage.requests_today == 31
    assert usage_module.cap_exceeded("gemini", usage, config.routing.caps["gemini"]) == \
        "gemini: 31/31 requests today"


def test_a_counter_running_through_midnight_starts_the_new_day_without_rereading_the_month(
        tmp_path: Path, parsed: list[int]) -> None:
    before_midnight = datetime(2026, 12, 4, 23, 59, 40, tzinfo=timezone.utc)
    store, clock = LearningStore(tmp_path, fsync=False), Clock(before_midnight)
    _log(store, 200, now=before_midnight)
    [log_path] = store.month_files("interactions")
    counter = UsageCounter(store, clock, checkpoint_path=tmp_path / "usage" / "counter.json")
    assert _usage(counter) == _from_scratch(store, clock)

    clock.now = before_midnight + timedelta(seconds=30)  # 00:00:10 the next day, same month
    size = log_path.stat().st_size
    for i in range(7):
        store.append_interaction(ts=_ts(clock.now - timedelta(seconds=i)), model="gemini", prompt=f"after {i}",
                                 response="a", tokens_in=2, tokens_out=3)
    parsed.clear()
    after = _usage(counter)
    assert parsed == [log_path.stat().st_size - size]  # only the new lines, not the month again
    assert after == _from_scratch(store, clock)
    assert after["gemini"].requests_today == 7 and after["gemini"].tokens_today == 35
    # the last minute is a minute across midnight: calls at 23:59:40 and later still count there
    assert after["gemini"].requests_last_minute > 7
