"""``SinkStatus``, a sink's health snapshot, and its text, HTML and DataFrame renderings.

This module stands below the notebook layer and involves no widgets, so a sink, the command
line and the notebook panel all render statuses through it. Everything here is a pure
function of the statuses and a clock reading, so the same cells are shown by the live widget
panel, by ``_repr_html_``/``__repr__`` in headless runs, and by ``hubkit status`` on a
terminal::

    print(status_text(sink.status()))
    IPython.display.HTML(status_html([a.status(), b.status()]))
    status_table([a.status(), b.status()])      # -> pl.DataFrame, one row per sink

Every function accepts one ``SinkStatus`` or an iterable of them. Ages are measured from
``now`` (default: the current UTC time); a naive ``last_sync`` is taken to be UTC.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

import polars as pl

from hubkit.types import ScheduleStatus, SyncStatus

__all__ = [
    "COLUMNS",
    "SinkStatus",
    "error_html",
    "format_duration",
    "humanize_age",
    "row_html",
    "row_text",
    "short_error",
    "status_html",
    "status_table",
    "status_text",
]


@dataclass(frozen=True)
class SinkStatus:
    """A frozen snapshot of a sink's health, for code, reprs and status panels."""

    name: str
    sync_status: SyncStatus
    schedule_status: ScheduleStatus
    connected: bool
    last_sync: datetime | None  # last successful sync (UTC)
    rows: int
    pending_pushes: int
    reconnects: int
    last_error: str | None  # full text of the last error handed to the error handler
    lag: float | None = None  # seconds between the newest remote row's arrival and its own time
    rate_limit_remaining: int | None = None  # what the remote said is left, if it says
    closed: bool = False
    # set when ``rows`` counts a cache window of a bigger table: the window's size
    window: int | None = None
    # a follower's delay behind the writer: from the writer's commit of the newest change it
    # applied to the moment it applied it (seconds); shown in the lag column when set
    behind: float | None = None

    def __str__(self) -> str:
        """A fixed-width text table of this status (for terminals, logs and headless runs)."""
        return status_text(self)

    def _repr_html_(self) -> str:
        """A small HTML table of this status, shown by Jupyter where no widget renders."""
        return status_html(self)


# (key, header) of every column, in display order. The widget panel adds an actions column.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "sink"),
    ("sync", "sync"),
    ("schedule", "schedule"),
    ("connected", "connected"),
    ("last_sync", "last sync"),
    ("rows", "rows"),
    ("lag", "lag"),
    ("pending", "pending"),
    ("reconnects", "reconnects"),
    ("rate_limit", "rate limit left"),
    ("error", "last error"),
)

# Right-aligned in the text table: the numeric columns.
_NUMERIC = frozenset({"rows", "lag", "pending", "reconnects", "rate_limit"})

_NONE = "—"
_SHORT_ERROR = 60

_SYNC_COLOURS: Mapping[SyncStatus, str] = MappingProxyType(
    {
        SyncStatus.FULL_SYNC: "#2e7d32",
        SyncStatus.REMOTE_DATA_RECEIVED: "#1565c0",
        SyncStatus.LOCAL_DATA_PUSHED: "#1565c0",
        SyncStatus.OUT_OF_SYNC: "#ef6c00",
    }
)
_RED = "#c62828"
_GREEN = "#2e7d32"
_GREY = "#757575"

# (column, dtype) of ``status_table``; a tuple because a ``pl.Schema`` is mutable.
_TABLE_COLUMNS: tuple[tuple[str, pl.DataType], ...] = (
    ("name", pl.String()),
    ("sync_status", pl.String()),
    ("schedule_status", pl.String()),
    ("connected", pl.Boolean()),
    ("closed", pl.Boolean()),
    ("last_sync", pl.Datetime("us", "UTC")),
    ("age_s", pl.Float64()),
    ("rows", pl.Int64()),
    ("lag_s", pl.Float64()),
    ("behind_s", pl.Float64()),
    ("pending_pushes", pl.Int64()),
    ("reconnects", pl.Int64()),
    ("rate_limit_remaining", pl.Int64()),
    ("last_error", pl.String()),
    ("window", pl.Int64()),
)


def _as_list(statuses: SinkStatus | Iterable[SinkStatus]) -> list[SinkStatus]:
    if isinstance(statuses, SinkStatus):
        return [statuses]
    return list(statuses)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _now(now: datetime | None) -> datetime:
    return datetime.now(UTC) if now is None else _utc(now)


def _age_seconds(status: SinkStatus, now: datetime) -> float | None:
    if status.last_sync is None:
        return None
    return (now - _utc(status.last_sync)).total_seconds()


def humanize_age(seconds: float | None) -> str:
    """How long ago, for people: ``12.3`` -> ``"12 s ago"``, ``None`` -> ``"never"``.

    Under a second (or a negative age, from clock skew) reads ``"just now"``.

    Granularity follows the size: seconds under a minute, minutes under an hour, hours (and
    minutes) under a day, then days. So a live display changes at most once a second.
    """
    if seconds is None:
        return "never"
    if seconds < 1:
        return "just now"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s ago"
    if whole < 3600:
        return f"{whole // 60} min ago"
    if whole < 86400:
        hours, minutes = divmod(whole // 60, 60)
        return f"{hours} h ago" if minutes == 0 else f"{hours} h {minutes} min ago"
    return f"{whole // 86400} d ago"


def format_duration(seconds: float | None) -> str:
    """A short duration for lags: ``0.0123`` -> ``"12 ms"``, ``1.5`` -> ``"1.5 s"``.

    ``None`` (unknown) reads ``"—"``.
    """
    if seconds is None:
        return _NONE
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        return f"{sign}{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{sign}{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{sign}{whole // 60} min {whole % 60} s"
    return f"{sign}{whole // 3600} h {whole % 3600 // 60} min"


def short_error(text: str | None, limit: int = _SHORT_ERROR) -> str:
    """The first line of an error, cut to ``limit`` characters with an ellipsis.

    ``None`` or empty reads ``"—"``; a multi-line text gets `` …`` after its first line.
    """
    if not text:
        return _NONE
    lines = text.strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > limit:
        return first[: limit - 1].rstrip() + "…"
    if len(lines) > 1:
        return first + " …"
    return first


def _label(value: str) -> str:
    return value.replace("_", " ")


def row_text(status: SinkStatus, now: datetime | None = None) -> dict[str, str]:
    """The plain-text cell of every column in ``COLUMNS`` for one status (errors shortened)."""
    moment = _now(now)
    return {
        "name": status.name,
        "sync": _label(status.sync_status.value),
        "schedule": _label(status.schedule_status.value),
        "connected": "closed" if status.closed else ("yes" if status.connected else "no"),
        "last_sync": humanize_age(_age_seconds(status, moment)),
        "rows": f"{status.rows:,}" if status.window is None else f"{status.rows:,} (window)",
        "lag": format_duration(status.lag if status.behind is None else status.behind),
        "pending": f"{status.pending_pushes:,}",
        "reconnects": f"{status.reconnects:,}",
        "rate_limit": _NONE
        if status.rate_limit_remaining is None
        else f"{status.rate_limit_remaining:,}",
        "error": short_error(status.last_error),
    }


def _span(text: str, colour: str, *, bold: bool = False, title: str | None = None) -> str:
    weight = "font-weight:bold;" if bold else ""
    title_attr = "" if title is None else f' title="{html.escape(title)}"'
    return f'<span style="color:{colour};{weight}"{title_attr}>{html.escape(text)}</span>'


def error_html(text: str | None) -> str:
    """An escaped error cell: the short form, and the full text behind a ``<details>`` toggle."""
    short = short_error(text)
    if not text:
        return _span(short, _GREY)
    if short == text.strip():
        return _span(short, _RED)
    return (
        f'<details><summary style="color:{_RED};cursor:pointer">{html.escape(short)}</summary>'
        '<pre style="white-space:pre-wrap;margin:0.2em 0;max-height:20em;overflow:auto">'
        f"{html.escape(text)}</pre></details>"
    )


def row_html(status: SinkStatus, now: datetime | None = None) -> dict[str, str]:
    """The escaped HTML fragment of every column in ``COLUMNS`` for one status.

    The widget panel puts these fragments in its cells and ``status_html`` in its ``<td>``s,
    so both always agree. Every value from the status is escaped.
    """
    cells = row_text(status, now)
    out = {key: html.escape(value) for key, value in cells.items()}
    out["name"] = _span(cells["name"], _GREY if status.closed else "inherit", bold=True)
    out["sync"] = _span(cells["sync"], _SYNC_COLOURS.get(status.sync_status, "inherit"))
    if status.closed:
        out["connected"] = _span("closed", _GREY)
    elif status.connected:
        out["connected"] = _span("● yes", _GREEN)
    else:
        out["connected"] = _span("○ no", _RED)
    if status.last_sync is not None:
        out["last_sync"] = _span(
            cells["last_sync"], "inherit", title=_utc(status.last_sync).isoformat()
        )
    if status.window is not None:
        tip = f"the cache holds the newest {status.window:,} rows; the store holds more"
        out["rows"] = _span(cells["rows"], "inherit", title=tip)
    if status.behind is not None:
        out["lag"] = _span(cells["lag"], "inherit", title="behind the writer's commits")
    if status.pending_pushes:
        out["pending"] = _span(cells["pending"], "#ef6c00")
    out["error"] = error_html(status.last_error)
    return out


def _text_table(rows: list[Mapping[str, str]]) -> list[str]:
    headers = {key: header for key, header in COLUMNS}
    widths = {key: max(len(headers[key]), *(len(r[key]) for r in rows)) for key, _ in COLUMNS}

    def line(cells: Mapping[str, str]) -> str:
        parts = [
            cells[key].rjust(widths[key]) if key in _NUMERIC else cells[key].ljust(widths[key])
            for key, _ in COLUMNS
        ]
        return "  ".join(parts).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def status_text(statuses: SinkStatus | Iterable[SinkStatus], *, now: datetime | None = None) -> str:
    """A fixed-width table, one line per sink, followed by the full text of shortened errors.

    ``"no sinks"`` for an empty iterable. Meant for terminals, logs and ``__repr__``.
    """
    items = _as_list(statuses)
    if not items:
        return "no sinks"
    moment = _now(now)
    lines = _text_table([row_text(s, moment) for s in items])
    for status in items:
        if status.last_error and short_error(status.last_error) != status.last_error.strip():
            lines.append(f"last error of {status.name}: {status.last_error.strip()}")
    return "\n".join(lines)


def status_html(statuses: SinkStatus | Iterable[SinkStatus], *, now: datetime | None = None) -> str:
    """A small self-contained HTML ``<table>``, one row per sink; all status text is escaped.

    Long errors show their first line with the full text behind ``<details>``. Meant for
    ``_repr_html_`` and for notebooks saved by headless runs, where widgets do not render.
    """
    items = _as_list(statuses)
    moment = _now(now)
    cell_style = "padding:2px 8px;text-align:left;vertical-align:top"
    head = "".join(f'<th style="{cell_style}">{html.escape(h)}</th>' for _, h in COLUMNS)
    body: list[str] = []
    for status in items:
        cells = row_html(status, moment)
        tds = "".join(f'<td style="{cell_style}">{cells[key]}</td>' for key, _ in COLUMNS)
        body.append(f"<tr>{tds}</tr>")
    if not items:
        body.append(f'<tr><td colspan="{len(COLUMNS)}" style="{cell_style}">no sinks</td></tr>')
    return (
        '<table class="hubkit-status" style="border-collapse:collapse;font-size:90%">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def status_table(
    statuses: SinkStatus | Iterable[SinkStatus], *, now: datetime | None = None
) -> pl.DataFrame:
    """One row per sink with typed columns, for code and dataframe-based tests.

    Columns: ``name``, ``sync_status`` and ``schedule_status`` (enum values), ``connected``,
    ``closed``, ``last_sync`` (``Datetime("us", "UTC")``), ``age_s`` (seconds since
    ``last_sync`` at ``now``), ``rows``, ``lag_s``, ``behind_s`` (a follower's delay behind
    the writer), ``pending_pushes``, ``reconnects``, ``rate_limit_remaining``, ``last_error``
    (full text), ``window`` (the cache window's size when ``rows`` counts only the newest rows
    of a bigger table, else null). The schema is the same when empty.
    """
    items = _as_list(statuses)
    moment = _now(now)
    data: dict[str, list[object]] = {name: [] for name, _ in _TABLE_COLUMNS}
    for s in items:
        data["name"].append(s.name)
        data["sync_status"].append(s.sync_status.value)
        data["schedule_status"].append(s.schedule_status.value)
        data["connected"].append(s.connected)
        data["closed"].append(s.closed)
        data["last_sync"].append(None if s.last_sync is None else _utc(s.last_sync))
        data["age_s"].append(_age_seconds(s, moment))
        data["rows"].append(s.rows)
        data["lag_s"].append(s.lag)
        data["behind_s"].append(s.behind)
        data["pending_pushes"].append(s.pending_pushes)
        data["reconnects"].append(s.reconnects)
        data["rate_limit_remaining"].append(s.rate_limit_remaining)
        data["last_error"].append(s.last_error)
        data["window"].append(s.window)
    return pl.DataFrame(data, schema=pl.Schema(_TABLE_COLUMNS))
