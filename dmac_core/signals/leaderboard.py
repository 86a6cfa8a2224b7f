"""The leaderboard from blind side-by-side votes: Bradley–Terry strengths with 95 % intervals.

Each model is an entry; each learner version is an entry of its own (``deepseek@v0003``), so
"does v0004 beat v0003 in blind votes" has an answer with an interval. Votes map to outcomes:
``a`` / ``b`` is a win for that side, ``tie`` is half a win each way, and ``both_bad`` (neither
answer acceptable) is, by ``leaderboard.both_bad``, a tie — it says nothing about which of the
two is better — or left out of the strengths; either way each entry's both-bad votes are
counted, because an entry often in both-bad pairs is bad in absolute terms however it ranks.

Thin evidence is said, not hidden: an entry with fewer than ``leaderboard.min_votes`` votes is
marked "too few votes", and a head-to-head whose interval for P(a beats b) contains 50 % is
"cannot tell yet".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pandas as pd

from ..config import LEARNER, LeaderboardConfig
from .bradley_terry import Outcome, Strengths, fit

LEADERBOARD_COLUMNS = ["rank", "entry", "strength", "low", "high", "votes", "wins", "losses", "ties", "both_bad",
                       "enough"]
Ratings = dict[str, tuple[float, int]]


def entry_name(model: Any, version: Any, learner: str = LEARNER) -> str:
    """The leaderboard entry of one side of a vote: the model, or ``learner@version``."""
    if model == learner and isinstance(version, str) and version:
        return f"{learner}@{version}"
    return str(model)


def vote_sides(votes: pd.DataFrame, learner: str = LEARNER) -> pd.DataFrame:
    """``votes`` with ``entry_a`` and ``entry_b`` columns (see :func:`entry_name`)."""
    votes = votes.copy()
    if votes.empty:
        return votes.assign(entry_a=pd.Series(dtype=str), entry_b=pd.Series(dtype=str))
    votes["entry_a"] = [entry_name(m, v, learner) for m, v in zip(votes["model_a"], votes["version_a"])]
    votes["entry_b"] = [entry_name(m, v, learner) for m, v in zip(votes["model_b"], votes["version_b"])]
    return votes


_SCORES = {"a": 1.0, "b": 0.0, "tie": 0.5}


def outcomes(votes: pd.DataFrame, both_bad: str = "tie") -> list[Outcome]:
    """Fit outcomes of votes that carry ``entry_a`` / ``entry_b`` (see the module docstring);
    a vote between two answers of the same entry says nothing about strengths and is skipped."""
    out = []
    for a, b, choice in zip(votes["entry_a"], votes["entry_b"], votes["choice"]):
        if a == b:
            continue
        if choice == "both_bad":
            if both_bad == "exclude":
                continue
            out.append(Outcome(a, b, 0.5))
        elif choice in _SCORES:
            out.append(Outcome(a, b, _SCORES[choice]))
    return out


@dataclass
class Leaderboard:
    """Strengths per entry (``table``, strongest first) and the fit behind them."""

    table: pd.DataFrame
    strengths: Strengths
    min_votes: int
    n_votes: int

    def head_to_head(self, a: str, b: str) -> dict[str, Any]:
        """P(``a`` beats ``b``) with its 95 % interval, and a verdict in words (see the module docstring)."""
        if a not in self.strengths.entries or b not in self.strengths.entries:
            missing = a if a not in self.strengths.entries else b
            raise ValueError(f"{missing!r} has no votes")
        p, low, high = self.strengths.win_probability(a, b)
        counts = self.table.set_index("entry")["votes"]
        if min(counts[a], counts[b]) < self.min_votes:
            verdict = f"too few votes to tell (each needs {self.min_votes})"
        elif low <= 0.5 <= high:
            verdict = "cannot tell yet: the interval includes 50 %"
        else:
            verdict = f"{a if p > 0.5 else b} is stronger"
        return {"a": a, "b": b, "p_a_beats_b": p, "low": low, "high": high, "verdict": verdict}


def build_leaderboard(sided: pd.DataFrame, config: LeaderboardConfig, seed: int = 0) -> Leaderboard:
    """The leaderboard of votes with ``entry_a`` / ``entry_b`` columns (see :func:`vote_sides`)."""
    found = outcomes(sided, config.both_bad)
    entries = sorted(set(sided["entry_a"]) | set(sided["entry_b"])) if len(sided) else []
    strengths = fit(found, entries, samples=config.bootstrap_samples, seed=seed)
    rows = []
    for i, entry in enumerate(entries):
        as_a, as_b = sided[sided["entry_a"] == entry], sided[sided["entry_b"] == entry]
        mine = pd.concat([as_a.assign(side="a"), as_b.assign(side="b")])
        mine = mine[mine["entry_a"] != mine["entry_b"]]
        wins = int(((mine["choice"] == mine["side"])).sum())
        ties = int((mine["choice"] == "tie").sum())
        bad = int((mine["choice"] == "both_bad").sum())
        rows.append({"entry": entry, "strength": strengths.strength[i], "low": strengths.low[i],
                     "high": strengths.high[i], "votes": len(mine), "wins": wins,
                     "losses": len(mine) - wins - ties - bad, "ties": ties, "both_bad": bad})
    table = pd.DataFrame(rows, columns=[c for c in LEADERBOARD_COLUMNS if c not in ("rank", "enough")])
    table["enough"] = table["votes"] >= config.min_votes
    table = table.sort_values(["strength", "votes"], ascending=[False, False]).reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    return Leaderboard(table[LEADERBOARD_COLUMNS], strengths, config.min_votes, len(found))


def leaderboards_by_topic(
    sided: pd.DataFrame, topic_of: Callable[[list[str]], Sequence[int]], labels: Callable[[int], str],
    config: LeaderboardConfig,
) -> dict[str, Leaderboard]:
    """One leaderboard per topic of the voted prompts (``topic_of`` assigns prompts to topics),
    keyed by the topic's label."""
    if sided.empty:
        return {}
    sided = sided.assign(topic=list(topic_of(sided["prompt"].tolist())))
    return {f"{int(t)}: {labels(int(t))}": build_leaderboard(group, config)
            for t, group in sided.groupby("topic")}


def routing_strengths(sided: pd.DataFrame, served_version: str | None, learner: str = LEARNER,
                      both_bad: str = "tie") -> Ratings:
    """Model → (strength, votes) for the router: every entry is fitted, and the learner is
    represented by its served version's entry (older versions' votes inform the fit but do not
    speak for what answers now). No bootstrap: routing needs the point estimate only."""
    found = outcomes(sided, both_bad)
    if not found:
        return {}
    strengths = fit(found, samples=0)
    counts: dict[str, int] = {}
    for o in found:
        counts[o.a] = counts.get(o.a, 0) + 1
        counts[o.b] = counts.get(o.b, 0) + 1
    out: Ratings = {}
    for i, entry in enumerate(strengths.entries):
        model, _, version = entry.partition("@")
        if model == learner:
            if served_version is None or version != served_version:
                continue
        out[model] = (float(strengths.strength[i]), counts[entry])
    return out


def recent(votes: pd.DataFrame, window_days: float | None) -> pd.DataFrame:
    """Votes of the last ``window_days`` days (all of them for None)."""
    if votes.empty or window_days is None:
        return votes
    cutoff = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=window_days)
    return votes[votes["ts"] >= cutoff]


__all__ = ["Leaderboard", "build_leaderboard", "entry_name", "leaderboards_by_topic", "outcomes", "recent",
           "routing_strengths", "vote_sides"]
