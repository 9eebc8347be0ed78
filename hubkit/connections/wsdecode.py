"""How data frames of a topic become rows: decoders by topic prefix, extractors, and runs.

Pure logic (no I/O), used by ``WebSocketConnection``:

- a ``TopicDecoder(spec, extract)`` turns a frame's ``data`` into rows:
  ``spec.from_wire(extract(data))``; ``TopicDecoders`` finds the decoder of a topic by its
  longest dotted prefix (``"kline.5.BTCUSDT"`` -> ``"kline.5"`` -> ``"kline"``). With the
  default extractor and ``data`` still JSON text (``msgspec.Raw``, see
  ``WsProtocol.parse_lazy``), ``TopicDecoder.rows`` decodes it straight into typed rows
  (``EntitySpec.wire_decoder()``): checked and converted on arrival, turned into a frame later,
  by the same conversion ``from_wire`` uses (``hubkit.entity.decode``);
- frames waiting in a queue are grouped into *runs* (``runs``): one per topic while the kind
  stays the same, so a topic's order is kept and a snapshot after deltas starts a new run;
- ``decode_run`` turns a run into one ``Message`` with a single frame build, and only when
  that fails decodes frame by frame to skip exactly the bad frames (never part of one).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import msgspec
import polars as pl

from hubkit.errors import DecodeError
from hubkit.types import FrameLost, Message

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec

__all__ = [
    "DecoderLike",
    "Extractor",
    "RawFrame",
    "Rows",
    "TopicDecoder",
    "TopicDecoders",
    "TypedRows",
    "decode_run",
    "decode_run_events",
    "default_extract",
    "renamed",
    "runs",
]

Extractor: TypeAlias = Callable[[Any], Sequence[Mapping[str, Any]]]
"""Turns a frame's ``data`` into the JSON objects ``spec.from_wire`` decodes; raises
``DecodeError`` for data of the wrong shape."""

Report: TypeAlias = Callable[[DecodeError, "str | None"], None]
"""Receives a decoding error and the topic it happened on."""


def default_extract(data: Any) -> Sequence[Mapping[str, Any]]:
    """A list of objects stays as it is; one object becomes a one-row list."""
    if isinstance(data, list):
        return data
    if isinstance(data, Mapping):
        return [data]
    raise DecodeError(f"data is a {type(data).__name__}, not a list or object", field="data")


def renamed(names: Mapping[str, str], extract: Extractor = default_extract) -> Extractor:
    """An extractor that renames keys (``{"p": "price"}``) in every item; others are kept."""

    def extractor(data: Any) -> Sequence[Mapping[str, Any]]:
        items = extract(data)
        out: list[Mapping[str, Any]] = []
        for item in items:
            if not isinstance(item, Mapping):
                raise DecodeError("an item of data is not an object", field="data")
            out.append({names.get(key, key): value for key, value in item.items()})
        return out

    return extractor


class TypedRows(list[Any]):
    """A frame's rows decoded by the spec's ``WireDecoder``: checked, not yet a Polars frame."""

    __slots__ = ()


Rows: TypeAlias = "Sequence[Mapping[str, Any]] | TypedRows | pl.DataFrame"
"""A frame's rows between arrival and ``decode_run``: extracted JSON objects, typed rows, or
(rows only ``from_wire``'s fallback for other shapes accepts) an already decoded frame."""


@dataclass(frozen=True)
class TopicDecoder:
    """How frames of one topic family become rows: ``spec.from_wire(extract(data))``."""

    spec: EntitySpec
    extract: Extractor = field(default=default_extract)

    def rows(self, data: Any) -> Rows:
        """A frame's ``data`` -> its rows, checked as far as can be done per frame.

        ``data`` that is still JSON text (``msgspec.Raw``) is decoded here: with the default
        extractor straight into typed rows; when msgspec refuses the text's shape or a value,
        by ``spec.from_wire``, which raises ``DecodeError`` naming the field or returns the
        decoded frame. Other ``data`` (plain JSON values) goes through ``extract``.
        """
        if isinstance(data, msgspec.Raw):
            if self.extract is default_extract:
                try:
                    return TypedRows(self.spec.wire_decoder().decode(data))
                except msgspec.DecodeError:
                    pass  # not in the typed shape: from_wire decides below
            try:
                data = msgspec.json.decode(data)
            except msgspec.DecodeError as exc:
                raise DecodeError(f"data is not JSON: {exc}", field="data") from exc
            if self.extract is default_extract:
                return self.spec.from_wire(default_extract(data))
        return self.extract(data)


DecoderLike: TypeAlias = "TopicDecoder | tuple[EntitySpec, Extractor] | EntitySpec"
"""What a decoder table accepts: a ``TopicDecoder``, a ``(spec, extractor)`` pair, a spec."""


def as_decoder(value: DecoderLike) -> TopicDecoder:
    if isinstance(value, TopicDecoder):
        return value
    if isinstance(value, tuple):
        spec, extract = value
        return TopicDecoder(spec, extract)
    return TopicDecoder(value)


class TopicDecoders:
    """Decoders by topic or dotted topic prefix; the longest match wins (cached per topic)."""

    def __init__(self, decoders: Mapping[str, DecoderLike]) -> None:
        self._decoders = {topic: as_decoder(value) for topic, value in decoders.items()}
        self._resolved: dict[str, TopicDecoder | None] = {}

    def resolve(self, topic: str) -> TopicDecoder | None:
        """The decoder of ``topic``, or None when no key is the topic or a prefix of it."""
        try:
            return self._resolved[topic]
        except KeyError:
            pass
        decoder = None
        parts = topic.split(".")
        for end in range(len(parts), 0, -1):
            decoder = self._decoders.get(".".join(parts[:end]))
            if decoder is not None:
                break
        self._resolved[topic] = decoder
        return decoder


@dataclass(slots=True)
class RawFrame:
    """A data frame whose rows are extracted but not yet decoded into a Polars frame."""

    topic: str
    kind: str
    items: Rows
    decoder: TopicDecoder
    received_at: float  # time.monotonic() on arrival


def runs(frames: Sequence[RawFrame]) -> list[list[RawFrame]]:
    """Group ``frames`` (in arrival order) into runs: per topic, while the kind stays the same.

    Runs come out in the order they started; within a topic, frames keep their order, and a
    kind change (snapshot -> delta -> snapshot) starts a new run after the earlier ones.
    """
    out: list[list[RawFrame]] = []
    latest: dict[str, list[RawFrame]] = {}
    for frame in frames:
        run = latest.get(frame.topic)
        if run is not None and run[-1].kind == frame.kind:
            run.append(frame)
        else:
            run = [frame]
            out.append(run)
            latest[frame.topic] = run
    return out


def decode_run(run: Sequence[RawFrame], report: Report) -> Message | None:
    """One ``Message`` with the rows of every frame in ``run`` that decodes; bad frames are
    reported and skipped whole. None when no frame decodes."""
    messages = [e for e in decode_run_events(run, report) if isinstance(e, Message)]
    if not messages:
        return None
    if len(messages) == 1 and messages[0].received_at == run[0].received_at:
        return messages[0]
    merged = pl.concat([m.frame for m in messages], how="vertical")
    return Message(run[0].topic, merged, run[0].kind, run[0].received_at)


def decode_run_events(run: Sequence[RawFrame], report: Report) -> list[Message | FrameLost]:
    """``decode_run``, keeping the place of each bad frame: the rows before it as one
    ``Message``, a ``FrameLost`` for it, the rows after it as the next ``Message``."""
    first = run[0]
    spec = first.decoder.spec
    if len(run) > 1:
        try:
            frame = frame_of(spec, [raw.items for raw in run])
        except Exception:
            pass  # find the bad frames one by one below
        else:
            return [Message(first.topic, frame, first.kind, first.received_at)]
    out: list[Message | FrameLost] = []
    good: list[pl.DataFrame] = []
    good_at = first.received_at

    def flush() -> None:
        if good:
            merged = pl.concat(good, how="vertical") if len(good) > 1 else good[0]
            out.append(Message(first.topic, merged, first.kind, good_at))
            good.clear()

    for raw in run:
        try:
            decoded = frame_of(spec, [raw.items])
        except Exception as exc:
            error = as_decode_error(exc, "rows do not decode", None)
            report(error, raw.topic)
            flush()
            out.append(FrameLost(raw.topic, error))
            continue
        if not good:
            good_at = raw.received_at
        good.append(decoded)
    flush()
    return out


def _sort_of(rows: Rows) -> int:
    if isinstance(rows, TypedRows):
        return 0
    if isinstance(rows, pl.DataFrame):
        return 1
    return 2


def frame_of(spec: EntitySpec, parts: Sequence[Rows]) -> pl.DataFrame:
    """The rows of ``parts`` (in order) as one frame: typed rows of consecutive parts are
    built into columns together, JSON objects decoded together by ``from_wire``."""
    groups = [(sort, list(group)) for sort, group in itertools.groupby(parts, key=_sort_of)]
    frames: list[pl.DataFrame] = []
    for sort, group in groups:
        if sort == 0:
            rows = group[0] if len(group) == 1 else list(itertools.chain.from_iterable(group))
            frames.append(spec.wire_decoder().frame(rows))  # type: ignore[arg-type]
        elif sort == 1:
            frames.extend(group)  # type: ignore[arg-type]
        else:
            items = [item for part in group for item in part]
            frames.append(spec.from_wire(items))  # type: ignore[arg-type]
    if len(frames) == 1:
        return frames[0]
    return pl.concat(frames, how="vertical")


def as_decode_error(exc: BaseException, what: str, field: str | None) -> DecodeError:
    """``exc`` as a ``DecodeError`` (unchanged if it already is one)."""
    if isinstance(exc, DecodeError):
        return exc
    error = DecodeError(f"{what}: {exc}", field=getattr(exc, "field", None) or field)
    error.__cause__ = exc
    return error
