"""Entity reflection (placeholder until implemented)."""


class EntitySpec:
    """How a dataclass maps to columns."""
