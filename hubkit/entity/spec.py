"""``EntitySpec``: how one dataclass maps to columns, frames and wire objects."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import msgspec
import polars as pl

from hubkit.entity.column import MISSING, Column
from hubkit.entity.decode import wire_value
from hubkit.entity.decoder import WireDecoder, decode_objects
from hubkit.entity.rows import Node, build_plan, key_sets, unknown_key, value_getter
from hubkit.entity.values import (
    as_utc,
    check_key,
    check_nulls,
    conform,
    no_nan,
    to_python,
    typed_series,
)
from hubkit.errors import ValidationError

__all__ = ["EntitySpec"]


@dataclasses.dataclass(frozen=True)
class EntitySpec:
    """How one dataclass maps to columns, frames and wire objects. Build with ``reflect``.

    Immutable and safe to share between threads.
    """

    cls: type
    table: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # column names

    # Derived in __post_init__ from the fields above; not part of equality or the repr.
    _root: Node = dataclasses.field(init=False, repr=False, compare=False)
    _getters: tuple[Callable[[Any], Any], ...] = dataclasses.field(
        init=False, repr=False, compare=False
    )
    _by_name: Mapping[str, Column] = dataclasses.field(init=False, repr=False, compare=False)
    _plain_dtypes: list[pl.DataType] | None = dataclasses.field(
        init=False, repr=False, compare=False
    )
    _required: tuple[int, ...] = dataclasses.field(init=False, repr=False, compare=False)
    _floats: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)
    _keys: Mapping[tuple[str, ...], frozenset[str]] = dataclasses.field(
        init=False, repr=False, compare=False
    )
    _wire_decoder: WireDecoder | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        # The dataclass is frozen: derived attributes are set once, here, and never again
        # (except the wire decoder, built on first use).
        derive = functools.partial(object.__setattr__, self)
        derive(
            "_root",
            build_plan(self.cls, {c.attr_path: i for i, c in enumerate(self.columns)}, (), False),
        )
        nested = {c.name for c in self.columns if len(c.attr_path) > 1}
        derive("_getters", tuple(value_getter(c, c.name in nested) for c in self.columns))
        derive("_by_name", {c.name: c for c in self.columns})
        # A frame already in this schema needs only a null check when no column's values
        # need checking beyond their dtype (decimal text, enum members and JSON text do).
        plain = all(c.kind not in ("decimal", "enum", "json") for c in self.columns)
        derive("_plain_dtypes", [c.dtype for c in self.columns] if plain else None)
        derive("_required", tuple(i for i, c in enumerate(self.columns) if not c.nullable))
        derive("_floats", tuple(c.name for c in self.columns if c.kind == "float"))
        derive("_keys", key_sets(self.columns))

    # -- shape --------------------------------------------------------------------------

    @property
    def schema(self) -> pl.Schema:
        """The Polars schema of every frame this spec returns (column order = ``columns``)."""
        return pl.Schema({c.name: c.dtype for c in self.columns})

    @property
    def names(self) -> tuple[str, ...]:
        """Column names in order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        """The column called ``name``; ``ValidationError`` if there is none."""
        col: Column | None = self._by_name.get(name)
        if col is None:
            raise ValidationError(
                f"{self.cls.__name__} has no column {name!r} (columns: {', '.join(self.names)})",
                column=name,
            )
        return col

    @property
    def fingerprint(self) -> str:
        """A stable hash of (column name, kind, nullable) for each column, plus the key.

        It changes exactly when stored rows would no longer read back as this entity.
        """
        return hashlib.sha256(msgspec.json.encode(self.describe())).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """The facts the fingerprint covers, as JSON-ready data."""
        cols = [
            [c.name, c.kind if c.dtype != pl.Int64 or c.kind != "enum" else "enum:int", c.nullable]
            for c in self.columns
        ]
        return {"columns": cols, "key": list(self.key)}

    def empty(self) -> pl.DataFrame:
        """A frame with no rows and this spec's schema."""
        return pl.DataFrame(schema=self.schema)

    # -- frames -------------------------------------------------------------------------

    def to_frame(self, rows: Iterable[object] | pl.DataFrame) -> pl.DataFrame:
        """Entities, dict rows or a frame -> a frame with exactly ``schema``.

        Dict rows may be keyed by column names or by field names (with nested dicts for
        nested dataclasses); a key that names no field is refused. A dict row or a frame
        without a column takes the field's dataclass default, else null when the column is
        nullable. NaN in a float column is no value: null where the column is nullable,
        refused where it is not. Raises ``ValidationError`` naming the column (or key) and
        value for an unknown or missing column, a value of the wrong type (``True`` is not
        a number), text that is not valid Unicode, a null in a non-nullable column or a
        naive datetime; nothing of the batch is kept in that case.
        """
        if isinstance(rows, pl.DataFrame):
            return self._frame_from_frame(rows)
        items = rows if isinstance(rows, list) else list(rows)
        if not items:
            return self.empty()
        series = []
        getters: tuple[Callable[[Any], Any], ...] = self._getters
        cls = self.cls
        for item in items:
            if isinstance(item, Mapping):
                bad = unknown_key(self._keys, item)
                if bad is not None:
                    raise ValidationError(
                        f"dict row {item!r} has key {bad!r}, which names no field of "
                        f"{cls.__name__} (columns: {', '.join(self.names)})",
                        column=bad,
                    )
            elif not isinstance(item, cls):
                raise ValidationError(
                    f"cannot store {item!r}: expected {cls.__name__} instances or dict rows"
                )
        for col, get in zip(self.columns, getters, strict=True):
            try:
                values = [get(o) for o in items]
            except AttributeError as exc:
                raise ValidationError(f"column {col.name!r}: {exc}", column=col.name) from None
            if MISSING in values:
                make = col.default
                if make is None and not col.nullable:
                    row = values.index(MISSING)
                    raise ValidationError(
                        f"column {col.name!r} is not nullable but row {row} has no value for it",
                        column=col.name,
                    )
                values = [(make() if make else None) if v is MISSING else v for v in values]
            s = typed_series(col, values)
            check_nulls(col, s)
            series.append(s)
        return pl.DataFrame(series)

    def _frame_from_frame(self, df: pl.DataFrame) -> pl.DataFrame:
        dtypes: list[pl.DataType] | None = self._plain_dtypes
        if dtypes is not None and df.columns == list(self.names) and df.dtypes == dtypes:
            # Already this schema (e.g. decoded by from_wire): only nulls and NaN can be wrong.
            if df.height:
                nulls = df.null_count().row(0)
                for i in self._required:
                    if nulls[i]:
                        check_nulls(self.columns[i], df.to_series(i))
                if self._floats and any(df.select(pl.col(self._floats).is_nan().any()).row(0)):
                    return df.with_columns(
                        no_nan(self.column(name), df.get_column(name)) for name in self._floats
                    )
            return df.clone()
        unknown = [c for c in df.columns if c not in self._by_name]
        if unknown:
            raise ValidationError(
                f"{self.cls.__name__} has no column {unknown[0]!r} "
                f"(columns: {', '.join(self.names)})",
                column=unknown[0],
            )
        out: list[pl.Series] = []
        for col in self.columns:
            if col.name in df.columns:
                s = conform(col, df.get_column(col.name))
            elif col.default is not None:
                s = typed_series(col, [col.default() for _ in range(df.height)])
            elif col.nullable:
                s = pl.Series(col.name, [None] * df.height, dtype=col.dtype)
            else:
                raise ValidationError(
                    f"column {col.name!r} is missing from the frame and is not nullable",
                    column=col.name,
                )
            check_nulls(col, s)
            out.append(s)
        return pl.DataFrame(out)

    def from_frame(self, df: pl.DataFrame) -> list[Any]:
        """A frame (any dtypes ``to_frame`` accepts) -> entity instances, in row order.

        Nested dataclasses are rebuilt, enums become members, decimals ``Decimal``,
        datetimes UTC-aware (``datetime.UTC``), JSON columns Python lists/dicts.
        """
        df = self._frame_from_frame(df)
        converters: list[tuple[int, Callable[[Any], Any]]] = []
        for i, c in enumerate(self.columns):
            if c.kind == "decimal":
                converters.append((i, Decimal))
            elif c.kind == "enum":
                converters.append((i, c.py_type))
            elif c.kind == "json":
                converters.append((i, msgspec.json.decode))
            elif c.kind == "datetime":
                converters.append((i, as_utc))
        root: Node = self._root
        out = []
        for row in df.iter_rows():
            if converters:
                values: list[Any] = list(row)
                for i, conv in converters:
                    v = values[i]
                    if v is not None:
                        values[i] = conv(v)
                out.append(root.build(values))
            else:
                out.append(root.build(row))
        return out

    def to_entity(self, row: Mapping[str, Any]) -> Any:
        """A row keyed by column names (frame or Python values) -> an entity instance."""
        values: list[Any] = []
        for c in self.columns:
            if c.name not in row:
                if not c.nullable:
                    raise ValidationError(
                        f"column {c.name!r} is not nullable but the row has no value for it",
                        column=c.name,
                    )
                values.append(None)
                continue
            v = to_python(c, row[c.name])
            if v is None and not c.nullable:
                raise ValidationError(
                    f"column {c.name!r} is not nullable but the row has None", column=c.name
                )
            values.append(v)
        root: Node = self._root
        return root.build(values)

    def to_row(self, entity: Any) -> dict[str, Any]:
        """An entity -> column-name keyed Python values (datetimes converted to UTC)."""
        getters: tuple[Callable[[Any], Any], ...] = self._getters
        row = {}
        for c, get in zip(self.columns, getters, strict=True):
            v = get(entity)
            row[c.name] = None if v is MISSING else to_python(c, v)
        return row

    def key_of(self, obj: Any) -> tuple[Any, ...]:
        """An entity, a row (mapping), a key tuple or (single-column key) a scalar -> key tuple.

        Raises ``ValidationError`` naming the key column for a missing part or a part of the
        wrong type (``"1"`` or ``True`` for an int key): such a key would match no row.
        """
        key = self._key_parts(obj)
        for name, value in zip(self.key, key, strict=True):
            check_key(self._by_name[name], value)
        return key

    def _key_parts(self, obj: Any) -> tuple[Any, ...]:
        if isinstance(obj, self.cls):
            return tuple(self._getters[self.names.index(k)](obj) for k in self.key)
        if isinstance(obj, Mapping):
            try:
                return tuple(obj[k] for k in self.key)
            except KeyError as exc:
                raise ValidationError(
                    f"row has no value for key column {exc.args[0]!r}", column=exc.args[0]
                ) from None
        if isinstance(obj, tuple):
            if len(obj) != len(self.key):
                raise ValidationError(
                    f"key {obj!r} has {len(obj)} parts; {self.cls.__name__} keys are "
                    f"({', '.join(self.key)})",
                    column=self.key[0],
                )
            return obj
        if len(self.key) != 1:
            raise ValidationError(
                f"key {obj!r} is a single value; {self.cls.__name__} keys are "
                f"({', '.join(self.key)})",
                column=self.key[0],
            )
        return (obj,)

    # -- wire ---------------------------------------------------------------------------

    def from_wire(self, items: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
        """Decode JSON objects (wire keys/paths) into a frame with exactly ``schema``.

        Numeric strings (``"0.10"``) become int/float/decimal values (an int column takes
        text spelling a whole number, ``"5"``, ``"5.0"``, ``"5e3"``, as it takes the JSON
        number ``5.0``; numeric text follows the JSON number grammar, with an optional
        ``+``, no spaces); integer, fractional or numeric string epochs (ms unless
        ``wire(unit=...)``) and ISO text (UTC without an offset) become UTC datetimes;
        ``""`` is a missing value for non-text columns, and so is NaN (``"nan"``) in a float
        column, as in ``to_frame``. A missing or null value for a non-nullable column, or a
        value that does not convert, raises ``DecodeError`` whose ``field`` is the wire name
        and whose message shows the value. ``hubkit.entity.decode`` has the one conversion.
        """
        if not items:
            return self.empty()
        decoder = self.wire_decoder()
        try:
            rows = decoder.convert(items)
        except msgspec.ValidationError:
            # Not in the typed shape (a missing field, "" for a number, ISO times ...): the
            # same conversion, value by value where msgspec refused, decides.
            return decode_objects(self, items)
        return decoder.frame(rows)

    def wire_decoder(self) -> WireDecoder:
        """The typed decoder of this spec's wire objects (built on first use, then kept)."""
        decoder = self._wire_decoder
        if decoder is None:
            decoder = WireDecoder(self)
            object.__setattr__(self, "_wire_decoder", decoder)
        return decoder

    def to_wire(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A row keyed by column names -> a nested JSON-ready dict keyed by wire paths.

        Decimals become strings, datetimes epoch integers in the column's wire unit, dates
        ISO text, enums their values, JSON columns Python lists/dicts. Absent columns are
        left out.
        """
        out: dict[str, Any] = {}
        for c in self.columns:
            if c.name not in row:
                continue
            v = wire_value(c, row[c.name])
            node = out
            for p in c.wire_path[:-1]:
                node = node.setdefault(p, {})
            node[c.wire_path[-1]] = v
        return out
