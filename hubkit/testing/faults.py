"""Store fault injection: make one statement of a store's write transactions fail.

For tests that show a change is applied in one transaction: the statement chosen by
``when`` raises a database error, as a full disk or a lost lock would, and the test then
checks that nothing of the change is visible::

    from hubkit.testing.faults import fail_store_writes, touches

    with fail_store_writes(sink.store, when=touches("hubkit_sync_state")) as fault:
        with pytest.raises(hubkit.StoreError):
            ...                                   # the write that also moves the cursor
    assert fault.fired == 1

``when(call)`` sees a ``StoreCall``: the transaction method (``"run"`` for a statement,
``"upsert"`` for an entity upsert, ``"insert_many"`` for a multi-row insert), the table it
targets and, for statements, the SQLAlchemy statement. Only the first matching call fails
unless ``times`` says otherwise. Nothing is patched globally: the hook is set on the one
``Store`` object and removed on exit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

if TYPE_CHECKING:
    from hubkit.store.engine import Backend

__all__ = ["Fault", "StoreCall", "deletes_from", "fail_store_writes", "touches"]


@dataclass(frozen=True)
class StoreCall:
    """One call on a write transaction: ``method``, the ``table`` name, the ``statement``."""

    method: str
    table: str | None
    statement: Any = None

    @property
    def is_delete(self) -> bool:
        return isinstance(self.statement, sa.Delete)

    def binds(self) -> list[Any]:
        """The values bound in the statement (e.g. the ids of an outbox delete)."""
        if self.statement is None:
            return []
        compiled = self.statement.compile(compile_kwargs={"render_postcompile": True})
        values: list[Any] = []
        for value in compiled.params.values():
            values.extend(value if isinstance(value, list | tuple) else [value])
        return values


def touches(table: str) -> Callable[[StoreCall], bool]:
    """A ``when`` that matches any write to ``table``."""
    return lambda call: call.table == table


def deletes_from(table: str) -> Callable[[StoreCall], bool]:
    """A ``when`` that matches a DELETE from ``table``."""
    return lambda call: call.table == table and call.is_delete


@dataclass
class Fault:
    """How often the injected failure fired."""

    fired: int = 0


class _FaultyTx:
    def __init__(
        self, tx: Any, when: Callable[[StoreCall], bool], fault: Fault, times: int
    ) -> None:
        self._tx = tx
        self._when = when
        self._fault = fault
        self._times = times

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._tx, name)
        if name not in ("run", "upsert", "insert_many"):
            return real

        def call(*args: Any) -> Any:
            self._check(_describe(name, args))
            return real(*args)

        return call

    def _check(self, call: StoreCall) -> None:
        if self._fault.fired < self._times and self._when(call):
            self._fault.fired += 1
            raise sa.exc.OperationalError(
                f"{call.method} on {call.table}", None, Exception("injected failure")
            )


def _describe(method: str, args: tuple[Any, ...]) -> StoreCall:
    if method == "run":
        stmt = args[0]
        table = getattr(stmt, "table", None)
        return StoreCall(method, getattr(table, "name", None), stmt)
    if method == "upsert":
        return StoreCall(method, args[0].name)
    return StoreCall(method, args[0].name)


@contextmanager
def _patched(store: Backend, when: Callable[[StoreCall], bool], times: int) -> Iterator[Fault]:
    fault = Fault()
    real = store._write

    @contextmanager
    def faulty() -> Iterator[Any]:
        with real() as tx:
            yield _FaultyTx(tx, when, fault, times)

    store._write = faulty  # type: ignore[method-assign]
    try:
        yield fault
    finally:
        del store._write


def fail_store_writes(
    store: Backend, *, when: Callable[[StoreCall], bool], times: int = 1
) -> AbstractContextManager[Fault]:
    """Within the ``with`` block, the first ``times`` write calls matching ``when`` fail with
    a database error (it leaves the store as ``StoreError``); yields a ``Fault`` counter.
    ``store`` is a ``Store`` (or a ``TableStore.store``)."""
    return _patched(store, when, times)
