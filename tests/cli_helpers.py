"""Helpers shared by the command-line tests."""

from __future__ import annotations

from hubkit.testing import BybitSimulator


def sim_env(sim: BybitSimulator) -> dict[str, str]:
    """The environment that points hubkit at ``sim``."""
    return {"HUBKIT_BYBIT_REST_URL": sim.rest_url, "HUBKIT_BYBIT_WS_URL": sim.ws_url}
