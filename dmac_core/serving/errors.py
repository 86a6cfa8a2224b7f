"""The error a request raises when no model could answer it.

Its own module so that callers which ask through the router (the training teacher, pages)
can catch it without importing the router, which depends on them.
"""

from __future__ import annotations

# Why a request was not answered, for callers that must tell the cases apart (the API gateway
# answers each with its own HTTP status):
UNKNOWN_MODEL = "unknown_model"  # no such model or learner version
OVER_CAP = "over_cap"  # every model that could answer is at one of its usage caps
UNAVAILABLE = "unavailable"  # off (no key, switched off), cooling down, or failed
MID_ANSWER = "mid_answer"  # the model failed after part of its answer was sent


class RoutingError(RuntimeError):
    """No model could answer; the message lists what was tried and why each was skipped.

    ``kind`` is one of :data:`UNKNOWN_MODEL`, :data:`OVER_CAP`, :data:`UNAVAILABLE`, :data:`MID_ANSWER`;
    ``retry_after`` (seconds) is set when waiting would help: a cap frees up at the next minute
    or day, a cooldown ends.
    """

    def __init__(self, message: str, kind: str = UNAVAILABLE, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after
