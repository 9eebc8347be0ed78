"""Small helpers the connections share for moving between JSON documents and entity rows."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hubkit.errors import DecodeError, HubkitError

if TYPE_CHECKING:
    import polars as pl

    from hubkit.entity import EntitySpec

logger = logging.getLogger("hubkit.connections")

_MISSING = object()


def split_path(path: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"result.list"`` -> ``("result", "list")``; None or ``""`` -> ``()`` (the document)."""
    if path is None:
        return ()
    if isinstance(path, str):
        return tuple(part for part in path.split(".") if part)
    return tuple(path)


def dig(document: Any, path: tuple[str, ...], default: Any = _MISSING) -> Any:
    """The value at ``path`` inside nested mappings; ``default`` (or DecodeError) when absent."""
    node = document
    for depth, part in enumerate(path):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
            continue
        if default is not _MISSING:
            return default
        where = ".".join(path[: depth + 1])
        raise DecodeError(f"the response has no {where!r}", field=where)
    return node


def decode_items(spec: EntitySpec, items: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """``spec.from_wire(items)``, with anything it raises turned into a ``DecodeError``."""
    try:
        frame: pl.DataFrame = spec.from_wire(items)
    except HubkitError:
        raise
    except Exception as exc:
        raise DecodeError(f"could not decode {spec.table} rows: {exc}") from exc
    return frame


def key_to_wire(spec: EntitySpec, key: Mapping[str, Any]) -> dict[str, Any]:
    """A key given by column names -> the same values under their (nested) wire names."""
    by_name = {column.name: column for column in spec.columns}
    out: dict[str, Any] = {}
    for name, value in key.items():
        column = by_name.get(name)
        path = column.wire_path if column is not None else (name,)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def echo_to_row(spec: EntitySpec, echo: Any) -> dict[str, Any] | None:
    """The remote's echo of a written row, as a column-keyed dict; None if it does not decode.

    A write the remote accepted must not fail because its echo is odd, so decoding problems are
    logged and dropped here rather than raised.
    """
    if not isinstance(echo, Mapping) or not echo:
        return None
    try:
        frame = spec.from_wire([echo])
    except Exception as exc:
        logger.info("ignoring the remote's echo of a %s write: %s", spec.table, exc)
        return None
    if frame.height != 1:
        return None
    row: dict[str, Any] = frame.row(0, named=True)
    return row
