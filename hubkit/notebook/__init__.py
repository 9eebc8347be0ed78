"""The notebook surface: live status panels and text/HTML renderings of sink statuses.

``import hubkit.notebook`` does not import ipywidgets; ``status_panel`` does, on first use::

    from hubkit.notebook import status_panel, status_text
    status_panel(sink_a, sink_b)          # live ipywidgets panel in a kernel
    print(status_text(sink_a.status()))   # anywhere
"""

from __future__ import annotations

from hubkit.notebook.panel import PanelRow, StatusPanel, StatusSource, Subscription, status_panel
from hubkit.status import (
    format_duration,
    humanize_age,
    status_html,
    status_table,
    status_text,
)

__all__ = [
    "PanelRow",
    "StatusPanel",
    "StatusSource",
    "Subscription",
    "format_duration",
    "humanize_age",
    "status_html",
    "status_panel",
    "status_table",
    "status_text",
]
