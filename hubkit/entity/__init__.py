"""Entity reflection: a plain ``@dataclass`` is the whole schema.

``reflect(Trade, key="id")`` reads a dataclass's fields and type hints once and returns an
immutable ``EntitySpec``: the columns (their Polars dtypes and kinds), the key, and the
mapping to and from JSON objects as a remote sends them ("the wire")::

    @dataclass
    class Instrument:
        symbol: str
        status: str
        tick_size: Annotated[Decimal, hubkit.wire("priceFilter.tickSize")]
        launch_time: datetime | None = None

    spec = hubkit.reflect(Instrument, key="symbol")
    frame = spec.from_wire(payload["result"]["list"])     # JSON objects -> Polars frame
    spec.from_frame(frame)                                 # -> [Instrument(...), ...]

Field types, the column kind, and how values look in the frames hubkit returns:

============================  =========  ===============================================
field type                    kind       frame dtype and value
============================  =========  ===============================================
``str``                       str        ``String``
``int``                       int        ``Int64``
``float``                     float      ``Float64``
``bool``                      bool       ``Boolean``
``Decimal``                   decimal    ``String`` holding the value's one canonical
                                         text (``"0.1"`` for ``Decimal("0.10")``, see
                                         ``canonical_decimal``); Polars' ``Decimal`` has a
                                         fixed scale and at most 38 digits, text has
                                         neither limit. Cast in a query for arithmetic.
``datetime``                  datetime   ``Datetime("us", "UTC")``; entities get
                                         UTC-aware datetimes (``datetime.UTC``)
``date``                      date       ``Date``
``Enum`` subclass             enum       ``String`` (or ``Int64`` for int-valued enums)
                                         holding ``member.value``
``list[...]``, ``dict[...]``  json       ``String`` holding JSON text
                                         (``pl.col(c).str.json_decode()`` to unpack)
nested dataclass              (flat)     one column per leaf field, named
                                         ``outer__inner`` (``price_filter__tick_size``)
``X | None``, ``Optional[X]`` nullable   the same, with nulls allowed
============================  =========  ===============================================

Rules that hold everywhere:

- **Time zones.** Datetimes are instants, kept as UTC. Aware values in any zone are
  converted to the equal UTC instant. Naive datetimes from Python code or frames are
  *rejected* with ``ValidationError``: hubkit never guesses a zone, and a naive
  ``datetime.now()`` is local time, not UTC. On the wire, integers and numeric strings are
  epoch times (milliseconds unless ``wire(..., unit=...)`` says otherwise) and ISO text
  without an offset is read as UTC, because a remote's wire format defines its own zone.
- **Decimals are values, not texts.** Every decimal is kept as one canonical text per
  value (exact, any number of digits), so a query for ``Decimal("0.1")`` finds a row
  written from ``Decimal("0.1000")`` and keys that are equal decimals are one key. The
  written scale is not kept: ``Decimal("0.1000")`` reads back as ``Decimal("0.1")`` (equal
  to it). Where the scale itself matters (a quote's number of places), keep it in a field
  of its own (an ``int`` of places) or declare the field ``str`` to keep the text as sent.
- **NaN is no value.** In a float column NaN is stored, cached and returned as null where
  the field is optional, and refused with ``ValidationError`` where it is not (SQLite
  cannot store NaN, so keeping it in memory would make the cache disagree with the store).
- **Nested dataclasses** are flattened into ``outer__inner`` columns (recursively:
  ``a__b__c``). An ``Optional`` nested dataclass makes all its columns nullable; it comes
  back as ``None`` when all of its columns are null.
- **Wire names.** Each attribute maps to the camelCase of its name (``tick_size`` ->
  ``tickSize``; a nested field's path is its parent's path plus its own).
  ``Annotated[T, hubkit.wire("p")]`` renames a field, ``wire("priceFilter.tickSize")``
  gives a dotted path into nested objects; on a nested dataclass field it renames the
  prefix of all its leaves.
- **Keys** are one column name or a tuple of them (a flattened nested column such as
  ``"price_filter__tick_size"`` is allowed); key columns cannot be nullable or JSON. A
  key of the wrong type (``"1"`` or ``True`` for an int key) is refused, not ignored.
- **Dict rows** use column or field names (a key naming no field is refused) and take the
  field's dataclass default for a missing field; ``True``/``False`` are not numbers.
- **Errors.** An unsupported definition raises ``SchemaError(field=...)`` from ``reflect``;
  a value that does not fit its column raises ``ValidationError(column=...)`` from
  ``to_frame`` (the whole batch is rejected); a wire object that does not decode raises
  ``DecodeError(field=<wire name>)`` from ``from_wire``. Messages name the field or column
  and the offending value.

Conversions are column-wise: values are gathered into one Python list per column and
turned into one Series. Wire values have one conversion (``hubkit.entity.decode``), whatever
decoded the JSON: msgspec's lax conversion (done while parsing by ``EntitySpec.wire_decoder()``
for JSON text, or asked of msgspec for objects already in Python), plus the few additions
``from_wire`` documents for values msgspec refuses.

The package, by job: ``column`` (``Column``, ``wire``), ``reflect`` (hints -> columns),
``values`` (Python and frame values <-> column dtypes), ``decode`` (wire values -> columns),
``decoder`` (wire objects -> frames), ``rows`` (entities <-> rows), ``spec`` (``EntitySpec``).
"""

from hubkit.entity.column import KINDS, Column, Wire, wire
from hubkit.entity.decoder import WireDecoder
from hubkit.entity.reflect import reflect
from hubkit.entity.spec import EntitySpec
from hubkit.entity.values import canonical_decimal, to_frame_value, to_python

__all__ = [
    "KINDS",
    "Column",
    "EntitySpec",
    "Wire",
    "WireDecoder",
    "canonical_decimal",
    "reflect",
    "to_frame_value",
    "to_python",
    "wire",
]
