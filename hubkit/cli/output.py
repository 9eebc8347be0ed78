"""What the commands print: one-line reasons, plain text tables, frames and store listings."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hubkit.cli.params import CommandError

if TYPE_CHECKING:
    import polars as pl

    from hubkit.store.inventory import TableInventory

__all__ = [
    "age_text",
    "first_line",
    "frame_text",
    "inventory_text",
    "location",
    "reason",
    "text_table",
    "write_frame",
]

#: Printed frames are cut to this many characters per line (a wide terminal).
FRAME_WIDTH = 160


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def reason(exc: BaseException) -> str:
    """One line saying why a command failed."""
    if isinstance(exc, KeyError) and exc.args:
        return str(exc.args[0])
    if isinstance(exc, CommandError | ValueError | OSError):
        return first_line(exc)
    return f"{type(exc).__name__}: {first_line(exc)}"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain text table; numeric columns right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [
        all(isinstance(r[i], int | float) or r[i] is None for r in rows) and bool(rows)
        for i in range(len(headers))
    ]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if numeric[i] else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(parts).rstrip()

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells[1:]]
    return "\n".join(out)


def age_text(moment: datetime | None, now: datetime | None = None) -> str:
    """``"12 s ago"``, ``"3 min ago"``... or ``"never"``."""
    from hubkit.status import humanize_age

    if moment is None:
        return "never"
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    return humanize_age(max(0.0, seconds))


def inventory_text(tables: Sequence[TableInventory]) -> str:
    """The ``hubkit status`` table: name, rows, last sync (time and age), pending pushes."""
    now = datetime.now(UTC)
    rows = [
        (
            t.name,
            "missing" if t.rows is None else t.rows,
            "never" if t.last_sync is None else t.last_sync.strftime("%Y-%m-%d %H:%M:%S UTC"),
            age_text(t.last_sync, now),
            t.pending,
        )
        for t in tables
    ]
    return text_table(("table", "rows", "last sync", "age", "pending pushes"), rows)


def location(url: str) -> str:
    """A SQLite file URL as its path; other URLs as they are."""
    import sqlalchemy as sa

    parsed = sa.make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or parsed.query:
        return url
    return str(Path(database))


def frame_text(
    frame: pl.DataFrame, rows: int, columns: Sequence[str] | None = None, *, wide: bool = False
) -> str:
    """The first ``rows`` rows of ``frame`` as Polars prints them, limited to ``columns``
    (every column when None), in ``FRAME_WIDTH`` characters; ``wide`` lets the lines grow
    as long as the values need instead (nothing squeezed)."""
    import polars as pl

    shown = frame.select(list(columns)) if columns is not None else frame
    with pl.Config(
        tbl_rows=rows,
        tbl_cols=-1,
        tbl_width_chars=_UNLIMITED if wide else FRAME_WIDTH,
        fmt_str_lengths=40,
        tbl_hide_dataframe_shape=True,
    ):
        return repr(shown.head(rows))


def write_frame(frame: pl.DataFrame, path: Path) -> None:
    """Write ``frame`` as Parquet or CSV, by the suffix of ``path``."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame.write_parquet(path)
    elif suffix == ".csv":
        frame.write_csv(path)
    else:
        raise CommandError(f"--out must end with .parquet or .csv, not {path.name!r}")


def readable_columns(
    frame: pl.DataFrame, first: Sequence[str], rows: int, width: int = FRAME_WIDTH
) -> list[str]:
    """The columns that fit in ``width`` characters when the first ``rows`` rows are printed
    with every value readable: ``first`` (e.g. the key), then the others in frame order,
    while they fit. At least the first column."""
    import polars as pl

    head = frame.head(rows)
    order = [c for c in first if c in head.columns]
    order += [c for c in head.columns if c not in order]
    chosen: list[str] = []
    used = 1  # the table's left border
    for name in order:
        values = [str(v) for v in head.get_column(name).to_list()]
        dtype = head.schema[name]
        label = _DATETIME_LABEL if isinstance(dtype, pl.Datetime) else len(str(dtype))
        cell = min(max([len(name), label, *map(len, values)]), _CELL_MAX) + 3
        if chosen and used + cell > width:
            continue
        chosen.append(name)
        used += cell
    return chosen


# The dtype label Polars prints under a datetime header ("datetime[μs, UTC]"; other labels
# are shorter than their class names), and the widest cell it prints (longer text is cut at
# fmt_str_lengths).
_DATETIME_LABEL = 17
_CELL_MAX = 43
# A line length no table reaches (Polars takes a 16-bit width): it then gives every column
# the width its values need.
_UNLIMITED = 65_000
