"""Fixtures for the egress tests; the machinery is in netkit.py (import it from there)."""

from __future__ import annotations

from netkit import agent_image, case, egress_case, host_listener, internet, launcher_roots

__all__ = ["agent_image", "case", "egress_case", "host_listener", "internet", "launcher_roots"]
