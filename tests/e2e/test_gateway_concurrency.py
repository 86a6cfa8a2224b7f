"""The workbench as ``make run`` starts it (pages and API in one process): 10 API clients and
3 browser sessions ask the one loaded local learner at the same moment, then rate their answers.
Every answer is recorded once, every rating is kept, and every client is answered."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest

from dmac_core.logs.store import LearningStore
from tests.conftest import tiny_config_dict
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, free_port, start_app, stop_app

pytestmark = pytest.mark.e2e

API_CLIENTS, BROWSERS = 10, 3


def _api_client(base_url: str, index: int) -> dict[str, Any]:
    """One API client: ask (streamed for odd clients), then rate the answer through /v1/feedback."""
    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=120)
    question = [{"role": "user", "content": f"API client {index}: what is a learning rate?"}]
    started = time.monotonic()
    if index % 2:
        chunks = list(client.chat.completions.create(model="deepseek", messages=question, stream=True))
        interaction_id = [c for c in chunks if c.choices and c.choices[0].finish_reason][0].model_extra["dmac"][
            "interaction_id"]
    else:
        interaction_id = client.chat.completions.create(model="deepseek", messages=question).model_extra["dmac"][
            "interaction_id"]
    waited = time.monotonic() - started
    rating = 1 + index % 5
    response = httpx.post(f"{base_url}/feedback", json={"interaction_id": interaction_id, "rating": rating,
                                                         "feedback": f"client {index}"}, timeout=30)
    assert response.status_code == 200, response.text
    return {"id": interaction_id, "rating": rating, "waited": waited}


async def _browser_session(browser: Any, url: str, index: int, ready: asyncio.Event,
                           go: asyncio.Event) -> dict[str, Any]:
    """One analyst: open Chat, wait for the signal, ask, rate the answer with 4 stars."""
    context = await browser.new_context(viewport={"width": 1200, "height": 900})
    page = await context.new_page()
    page.set_default_timeout(120_000)
    try:
        await page.goto(url)
        box = page.get_by_test_id("stChatInputTextArea")
        await box.wait_for()
        await box.fill(f"Browser {index}: what is a learning rate?")
        ready.set()
        await go.wait()
        started = time.monotonic()
        await box.press("Enter")
        await page.get_by_role("button", name="Save rating").first.wait_for()
        waited = time.monotonic() - started
        answer = page.get_by_test_id("stChatMessage").nth(1)
        await answer.get_by_test_id("stFeedbackButton").nth(3).click()
        await answer.get_by_role("button", name="Save rating").click()
        await page.get_by_text("Saved:").first.wait_for()
        return {"waited": waited}
    except Exception:
        await page.screenshot(path=str(Path("test-artifacts") / f"gateway-concurrency-{index}.png"), full_page=True)
        raise
    finally:
        await context.close()


async def _everyone(url: str, api_url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        go = asyncio.Event()
        ready = [asyncio.Event() for _ in range(BROWSERS)]
        sessions = [asyncio.create_task(_browser_session(browser, url, i, ready[i], go)) for i in range(BROWSERS)]
        # everyone asks at the same moment: once the three pages have their question typed
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 90)
        go.set()
        api = [asyncio.to_thread(_api_client, api_url, i) for i in range(API_CLIENTS)]
        results = await asyncio.gather(*api, *sessions)
        await browser.close()
    return list(results[:API_CLIENTS]), list(results[API_CLIENTS:])


def test_ten_api_clients_and_three_browsers_share_the_learner(tmp_path: Path, tiny_model_dir: Path) -> None:
    config = tiny_config_dict(tmp_path / "data", tiny_model_dir, max_new_tokens=24)
    api_port = free_port()
    process, url, data_dir = start_app(tmp_path, config, with_user=False, api_port=api_port)
    try:
        api_url = f"http://127.0.0.1:{api_port}/v1"
        models = httpx.get(f"{api_url}/models", timeout=30).json()
        assert [m["id"] for m in models["data"]] == ["auto", "deepseek"]
        api, browsers = asyncio.run(_everyone(url, api_url))
    except Exception:
        print((tmp_path / "streamlit.log").read_text(errors="replace")[-3000:])
        raise
    finally:
        stop_app(process)
    store = LearningStore(data_dir)
    interactions = store.records("interactions")
    feedback = store.records("feedback")
    # every answer recorded exactly once: 10 API answers and 3 browser answers
    assert len(interactions) == API_CLIENTS + BROWSERS and len({r["id"] for r in interactions}) == len(interactions)
    assert sorted(r["id"] for r in interactions if r["session_id"] == "api") == sorted(a["id"] for a in api)
    assert all(r["error"] is None and r["response"] for r in interactions)
    # every rating kept, each on its own answer
    by_answer = {f["interaction_id"]: f["rating"] for f in feedback}
    assert len(feedback) == API_CLIENTS + BROWSERS and len(by_answer) == len(feedback)
    assert all(by_answer[a["id"]] == a["rating"] for a in api)
    browser_ids = [r["id"] for r in interactions if r["session_id"] != "api"]
    assert [by_answer[i] for i in browser_ids] == [4] * BROWSERS
    # nobody starved: one shared queue, first come first served, so the longest wait is the
    # whole burst (13 answers one after another), not a client left behind indefinitely
    waits = [a["waited"] for a in api] + [b["waited"] for b in browsers]
    print("GATEWAY+BROWSER waits (s):", json.dumps([round(w, 2) for w in waits]))
    assert max(waits) < 120
