"""Drive N concurrent browser sessions that chat and rate against a running workbench.

Used by ``tests/e2e/test_load.py`` (short) and ``bench/load_bench.py`` (two minutes). Each
session asks a question, waits for the answer, clicks a star and "Save rating", and measures
the time from that click until the page confirms the record was saved.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS


@dataclass
class LoadResult:
    sessions: int
    seconds: float
    clicks: int = 0
    answers: int = 0
    errors: list[str] = field(default_factory=list)
    save_latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        data = sorted(self.save_latencies_ms)
        if not data:
            return float("nan")
        return data[min(len(data) - 1, int(round(q * (len(data) - 1))))]

    def summary(self) -> dict[str, Any]:
        return {
            "sessions": self.sessions, "seconds": self.seconds, "answers": self.answers, "clicks": self.clicks,
            "errors": len(self.errors), "p50_ms": round(self.percentile(0.5), 1),
            "p95_ms": round(self.percentile(0.95), 1),
            "mean_ms": round(statistics.fmean(self.save_latencies_ms), 1) if self.save_latencies_ms else None,
        }


async def _wait_until(predicate: Any, what: str, timeout: float = 60.0) -> None:
    """Poll an async predicate; a page that never gets there is an error, not a hang."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f} s")
        await asyncio.sleep(0.02)


async def _session(browser: Any, url: str, index: int, seconds: float, result: LoadResult) -> None:
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(60_000)
    try:
        await page.goto(url)
        await page.get_by_test_id("stChatInputTextArea").wait_for()
        deadline = time.monotonic() + seconds  # from the moment this session's page is ready
        turn = 0
        while time.monotonic() < deadline:
            turn += 1
            await page.get_by_test_id("stChatInputTextArea").fill(f"Session {index} question {turn}?")
            await page.get_by_test_id("stChatInputTextArea").press("Enter")
            save_buttons = page.get_by_role("button", name="Save rating")
            await _wait_until(lambda: _at_least(save_buttons, turn), "answer")
            result.answers += 1
            # Scope to the newest answer: a rated answer's star widget renders differently, so
            # global indices into every star button on the page would drift.
            newest = page.get_by_test_id("stChatMessage").nth(2 * turn - 1)
            await newest.get_by_test_id("stFeedbackButton").nth(turn % 5).click()
            save = newest.get_by_role("button", name="Save rating")
            saved = page.get_by_text("Saved:")
            before = await saved.count()
            await _wait_until(save.is_enabled, "enabled Save button")
            started = time.perf_counter()
            await save.click()
            result.clicks += 1
            await _wait_until(lambda: _at_least(saved, before + 1), "save confirmation")
            result.save_latencies_ms.append((time.perf_counter() - started) * 1000)
            if await page.get_by_test_id("stException").count():
                result.errors.append(f"session {index}: exception shown on the page")
                break
    except Exception as exc:  # recorded, not raised: the other sessions go on
        result.errors.append(f"session {index}: {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        await context.close()


async def _at_least(locator: Any, n: int) -> bool:
    return bool(await locator.count() >= n)


async def run_load(url: str, sessions: int, seconds: float) -> LoadResult:
    """Run ``sessions`` concurrent browser sessions for ``seconds``."""
    from playwright.async_api import async_playwright

    result = LoadResult(sessions=sessions, seconds=seconds)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        await asyncio.gather(*(_session(browser, url, i, seconds, result) for i in range(sessions)))
        await browser.close()
    return result
