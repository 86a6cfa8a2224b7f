"""Tables for the Insights page: the active-learning queue and per-token confidence."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..insights.active import QueueItem
from ..insights.explain import TokenScore


def queue_frame(items: list[QueueItem]) -> pd.DataFrame:
    """The queue as a table for display: prompt, reasons, score, answers, details."""
    return pd.DataFrame(
        [{"prompt": i.prompt, "reasons": i.reason_text, "score": i.score, "answers": len(i.answers),
          "entropy": i.details.get("entropy"), "similarity": i.details.get("similarity"),
          "lowest rating": i.details.get("min_rating")} for i in items],
        columns=["prompt", "reasons", "score", "answers", "entropy", "similarity", "lowest rating"],
    )


def confidence_frame(scores: list[TokenScore], per_row: int = 12) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tokens laid out in rows of ``per_row`` for a shaded table: (token texts, probabilities).

    Whitespace is made visible (``·``, ``⏎``); both frames have the same shape and columns,
    padding cells are "" / NaN.
    """
    texts = [s.token.replace("\n", "⏎").replace(" ", "·") or "∅" for s in scores]
    probs = [s.prob for s in scores]
    rows = max(1, -(-len(texts) // per_row))
    pad = rows * per_row - len(texts)
    columns = [str(c) for c in range(per_row)]
    grid = pd.DataFrame(np.array(texts + [""] * pad, dtype=object).reshape(rows, per_row), columns=columns)
    shade = pd.DataFrame(np.array(probs + [np.nan] * pad, dtype=float).reshape(rows, per_row), columns=columns)
    return grid, shade
