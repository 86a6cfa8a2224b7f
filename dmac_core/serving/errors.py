"""The error a request raises when no model could answer it.

Its own module so that callers which ask through the router (the training teacher, pages)
can catch it without importing the router, which depends on them.
"""

from __future__ import annotations


class RoutingError(RuntimeError):
    """No model could answer; the message lists what was tried and why each was skipped."""
