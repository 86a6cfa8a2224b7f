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
            while await save_buttons.count() < turn:
                await asyncio.sleep(0.05)
            result.answers += 1
            stars = page.get_by_test_id("stFeedbackButton")
            await stars.nth((turn - 1) * 5 + (turn % 5)).click()  # a star of the newest answer
            await save_buttons.nth(turn - 1).wait_for()
            saved = page.get_by_text("Saved:")
            before = await saved.count()
            await page.wait_for_function(
                "n => [...document.querySelectorAll('button')].filter(b => b.innerText.includes('Save rating'))"
                "[n - 1] && ![...document.querySelectorAll('button')].filter(b => b.innerText.includes('Save rating'))"
                "[n - 1].disabled", arg=turn,
            )
            started = time.perf_counter()
            await save_buttons.nth(turn - 1).click()
            result.clicks += 1
            while await saved.count() <= before:
                await asyncio.sleep(0.02)
            result.save_latencies_ms.append((time.perf_counter() - started) * 1000)
            if await page.get_by_test_id("stException").count():
                result.errors.append(f"session {index}: exception shown on the page")
                break
    except Exception as exc:  # recorded, not raised: the other sessions go on
        result.errors.append(f"session {index}: {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        await context.close()


async def run_load(url: str, sessions: int, seconds: float) -> LoadResult:
    """Run ``sessions`` concurrent browser sessions for ``seconds``."""
    from playwright.async_api import async_playwright

    result = LoadResult(sessions=sessions, seconds=seconds)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        await asyncio.gather(*(_session(browser, url, i, seconds, result) for i in range(sessions)))
        await browser.close()
    return result
