"""How data frames of a topic become rows: decoders by topic prefix, extractors, and runs.

Pure logic (no I/O), used by ``WebSocketConnection``:

- a ``TopicDecoder(spec, extract)`` turns a frame's ``data`` into rows:
  ``spec.from_wire(extract(data))``; ``TopicDecoders`` finds the decoder of a topic by its
  longest dotted prefix (``"kline.5.BTCUSDT"`` -> ``"kline.5"`` -> ``"kline"``);
- frames waiting in a queue are grouped into *runs* (``runs``): one per topic while the kind
  stays the same, so a topic's order is kept and a snapshot after deltas starts a new run;
- ``decode_run`` turns a run into one ``Message`` with a single ``from_wire`` call, and only
  when that fails decodes frame by frame to skip exactly the bad frames (never part of one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import polars as pl

from hubkit.errors import DecodeError
from hubkit.types import Message

if TYPE_CHECKING:
    from hubkit.entity import EntitySpec

__all__ = [
    "DecoderLike",
    "Extractor",
    "RawFrame",
    "TopicDecoder",
    "TopicDecoders",
    "decode_run",
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


@dataclass(frozen=True)
class TopicDecoder:
    """How frames of one topic family become rows: ``spec.from_wire(extract(data))``."""

    spec: EntitySpec
    extract: Extractor = field(default=default_extract)


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
    items: Sequence[Mapping[str, Any]]
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
    first = run[0]
    if len(run) > 1:
        try:
            frame = first.decoder.spec.from_wire([item for raw in run for item in raw.items])
        except Exception:
            pass  # find the bad frames one by one below
        else:
            return Message(first.topic, frame, first.kind, first.received_at)
    frames: list[pl.DataFrame] = []
    for raw in run:
        try:
            frames.append(raw.decoder.spec.from_wire(raw.items))
        except Exception as exc:
            report(as_decode_error(exc, "rows do not decode", None), raw.topic)
    if not frames:
        return None
    merged = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
    return Message(first.topic, merged, first.kind, first.received_at)


def as_decode_error(exc: BaseException, what: str, field: str | None) -> DecodeError:
    """``exc`` as a ``DecodeError`` (unchanged if it already is one)."""
    if isinstance(exc, DecodeError):
        return exc
    error = DecodeError(f"{what}: {exc}", field=getattr(exc, "field", None) or field)
    error.__cause__ = exc
    return error
