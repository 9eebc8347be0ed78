"""pytest fixtures for hubkit and its users: ``bybit_sim`` and ``hub_store``."""

from __future__ import annotations
