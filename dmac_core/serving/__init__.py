"""Serving chat requests: the router (model choice, caps, fallbacks), usage counting,
routing errors and image attachments."""
