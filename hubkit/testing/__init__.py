"""Testing helpers: an in-memory connection, a ByBit v5 simulator and pytest fixtures."""
