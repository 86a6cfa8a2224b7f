"""Which listen addresses keep the workbench to this machine."""

from __future__ import annotations

import ipaddress


def is_loopback(address: str) -> bool:
    """Whether listening on ``address`` reaches this machine only. Anything else is not: an
    empty address and ``0.0.0.0`` / ``::`` make the web server listen on every interface."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False
