"""What the names on a command line point at: the store, a dataset, ByBit symbols.

Each lookup that fails says what was asked for and suggests the close matches.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from hubkit.cli.params import CommandError, did_you_mean, symbols_of

if TYPE_CHECKING:
    from hubkit import Catalog, Dataset

__all__ = ["checking_symbols", "dataset_named", "store_for", "unknown_symbols"]

T = TypeVar("T")

#: The category of a dataset's symbols when its parameters name none (as the ByBit datasets).
DEFAULT_CATEGORY = "linear"


def store_for(explicit: str | None, *, create: bool) -> str:
    """The store a command uses: ``--store`` when given, else ``hubkit.db`` in the default
    home (``hubkit.home.default_home()``), whose folder is made when ``create``."""
    if explicit is not None:
        return explicit
    from hubkit.home import default_home

    home = default_home()
    if create:
        home.mkdir(parents=True, exist_ok=True)
    return str(home / "hubkit.db")


def dataset_named(catalog: Catalog, name: str) -> Dataset:
    """The dataset ``name`` of ``catalog``; ``CommandError`` with close matches otherwise."""
    if name not in catalog:
        known = catalog.names()
        raise CommandError(
            f"unknown dataset {name!r}{did_you_mean(name, known)} (known: {', '.join(known)})"
        )
    return catalog[name]


def unknown_symbols(symbols: Sequence[str], category: str, store: str) -> CommandError | None:
    """A ``CommandError`` naming each of ``symbols`` that is not an instrument of
    ``category`` (with close matches), or None when all are known or the instruments cannot
    be loaded (then the original failure is the better report)."""
    import hubkit

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            known = hubkit.load("instruments", category=category, store=store)
    except (hubkit.HubkitError, ValueError):
        return None
    names = [str(s) for s in known.get_column("symbol").to_list()]
    listed = set(names)
    missing = [s for s in symbols if s not in listed]
    if not missing:
        return None
    parts = [f"{s!r}{did_you_mean(s, names)}" for s in missing]
    plural = "s" if len(missing) > 1 else ""
    return CommandError(f"unknown {category} symbol{plural} {', '.join(parts)}")


def checking_symbols(params: Mapping[str, Any], store: str, work: Callable[[], T]) -> T:
    """``work()``; when it fails with a hubkit error and ``params`` name symbols the remote
    does not list, raise a ``CommandError`` naming them instead (the failure is its cause)."""
    import hubkit

    try:
        return work()
    except hubkit.HubkitError as exc:
        symbols = symbols_of(params)
        category = params.get("category", DEFAULT_CATEGORY)
        if not symbols or not isinstance(category, str):
            raise
        better = unknown_symbols(symbols, category, store)
        if better is None:
            raise
        raise better from exc
