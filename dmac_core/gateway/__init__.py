"""The OpenAI-compatible API: every client that speaks the OpenAI chat format is captured,
routed and learned from like the Chat page (see :mod:`.app`)."""
