"""The words of a command line: durations, dataset parameters, symbols, and close matches.

Free of I/O: every function here turns text into values or raises ``ValueError`` /
``CommandError`` with a message that names what was wrong.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "close_matches",
    "did_you_mean",
    "duration_arg",
    "is_typo",
    "param_value",
    "parse_duration",
    "parse_params",
    "positive_float",
    "symbols_of",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

_DURATION: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)?", re.IGNORECASE)
_UNIT_SECONDS: Final = MappingProxyType(
    {
        "ms": 0.001,
        "s": 1.0,
        "sec": 1.0,
        "m": 60.0,
        "min": 60.0,
        "h": 3600.0,
        "d": 86400.0,
    }
)
_UNITS_TEXT: Final = "units: ms, s (sec), m (min), h, d; examples: 10s, 5m, 1h30m, 250ms"


class CommandError(Exception):
    """A failure the command reports as one line (exit status 1)."""


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``"10s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``, ``"2d"`` or a bare
    number of seconds (``"7.5"``). Raises ``ValueError`` for anything else or a value <= 0;
    an unknown unit is named and the valid units are listed."""
    cleaned = text.strip().replace(" ", "")
    if not cleaned:
        raise ValueError(f"empty duration ({_UNITS_TEXT})")
    total = 0.0
    pos = 0
    for match in _DURATION.finditer(cleaned):
        if match.start() != pos:
            break
        number, unit = match.groups()
        if unit is not None and unit.lower() not in _UNIT_SECONDS:
            raise ValueError(f"invalid duration {text!r}: unknown unit {unit!r} ({_UNITS_TEXT})")
        if unit is None and (match.start() != 0 or match.end() != len(cleaned)):
            raise ValueError(f"invalid duration {text!r}: every part needs a unit ({_UNITS_TEXT})")
        total += float(number) * _UNIT_SECONDS[(unit or "s").lower()]
        pos = match.end()
    if pos != len(cleaned):
        raise ValueError(f"invalid duration {text!r} ({_UNITS_TEXT})")
    if not math.isfinite(total) or total <= 0:
        raise ValueError(f"invalid duration {text!r}: it must be positive")
    return total


def param_value(text: str) -> str | list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (blanks dropped); text without a comma stays text."""
    if "," in text:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def parse_params(words: Sequence[str]) -> dict[str, Any]:
    """Dataset parameters from ``key=value`` words and ``--key value`` / ``--key=value``
    options. Dashes in keys become underscores; a value with commas becomes a list of
    strings; values stay text otherwise (the dataset converts them). A repeated key keeps
    its last value. Raises ``ValueError`` for a word that is neither form."""
    params: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word.startswith("--"):
            body = word[2:]
            if "=" in body:
                key, value = body.split("=", 1)
            elif i < len(words) and not words[i].startswith("--"):
                key, value = body, words[i]
                i += 1
            else:
                raise ValueError(f"option {word} needs a value (e.g. {word} VALUE)")
        elif "=" in word and not word.startswith("="):
            key, value = word.split("=", 1)
        else:
            raise ValueError(f"unexpected argument {word!r}; parameters look like key=value")
        key = key.strip().replace("-", "_")
        if not key.isidentifier():
            raise ValueError(f"invalid parameter name {key!r}")
        params[key] = param_value(value)
    return params


def symbols_of(params: Mapping[str, Any]) -> list[str]:
    """The upper-cased symbols of ``symbols=`` (or ``symbol=``), text or a list."""
    raw = params.get("symbols", params.get("symbol"))
    if raw is None:
        return []
    names = [raw] if isinstance(raw, str) else list(raw)
    return [str(n).strip().upper() for n in names if str(n).strip()]


def close_matches(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``candidates`` that look like ``word``: those one typing slip away
    (``is_typo``; difflib ranks a swap such as ``fro``/``for`` low), else difflib's best."""
    pool = list(dict.fromkeys(candidates))
    slips = [c for c in pool if is_typo(word, c)]
    return slips[:n] if slips else difflib.get_close_matches(word, pool, n=n, cutoff=0.6)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``" (did you mean A or B?)"`` for the close matches of ``word``, or ``""``."""
    found = close_matches(word, candidates)
    if not found:
        return ""
    return f" (did you mean {' or '.join(found)}?)"


def is_typo(word: str, target: str) -> bool:
    """Whether ``word`` is ``target`` with one slip: a letter missing, added, changed, or two
    neighbours swapped (``--fro`` for ``--for``), ignoring case. Equal words are no typo."""
    a, b = word.lower(), target.lower()
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    return _slips(a, b) <= 1


def _slips(a: str, b: str) -> int:
    """The optimal string alignment distance (Levenshtein plus adjacent swaps)."""
    rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        rows[i][0] = i
    for j in range(len(b) + 1):
        rows[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            best = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                best = min(best, rows[i - 2][j - 2] + 1)
            rows[i][j] = best
    return rows[len(a)][len(b)]


def duration_arg(text: str) -> float:
    """``parse_duration`` as an argparse ``type`` (its message becomes the usage error)."""
    import argparse

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_float(text: str) -> float:
    """A number > 0, as an argparse ``type``."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value
