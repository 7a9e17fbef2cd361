"""The local stack's helpers that the fleet tests rely on."""

from __future__ import annotations

from lab import stack


def test_ports_drawn_for_a_fleet_before_any_is_bound_are_all_different() -> None:
    # A fleet's configs are all written before its first agent listens: a port drawn twice
    # would leave one agent unable to start ("Address already in use").
    ports = [stack.free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    assert all(port in stack.LISTEN_PORTS for port in ports)
