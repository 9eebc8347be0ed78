"""Bad store paths and files get errors that say what is wrong with which file, and a refused
or read-only file is left exactly as it was."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import hubkit
from hubkit.errors import CorruptStoreError, StoreError, StorePathError

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534


@dataclass
class Item:
    id: int
    name: str


SPEC = hubkit.reflect(Item, key="id")


def open_table(path: Path | str, *, fast: bool | None = None) -> int:
    with hubkit.Store(path, fast=fast) as store:
        return store.table(SPEC).count()


def sqlite_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".db" in p.name)


def journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        conn.close()


# -- paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_a_path_in_a_missing_folder_names_the_folder(tmp_path: Path, fast: bool) -> None:
    path = tmp_path / "missing" / "x.db"
    with pytest.raises(StorePathError) as info:
        open_table(path, fast=fast)
    assert str(info.value) == (
        f"cannot open store {path}: its folder {tmp_path / 'missing'} does not exist "
        "(create it first)"
    )
    assert info.value.path == str(path)
    assert "allocate memory" not in str(info.value)
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("fast", [True, False])
def test_a_folder_given_as_the_store_path_is_refused(tmp_path: Path, fast: bool) -> None:
    (tmp_path / "keep.txt").write_text("untouched")
    with pytest.raises(StorePathError, match=f"store path {tmp_path} is a folder, not a SQLite"):
        open_table(tmp_path, fast=fast)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


# -- corrupt files --------------------------------------------------------------------------


@pytest.mark.parametrize("fast", [True, False])
def test_a_file_that_is_not_a_database_is_named(tmp_path: Path, fast: bool) -> None:
    path = tmp_path / "notes.db"
    content = b"these are my notes, not a database\n" * 200
    path.write_bytes(content)
    with pytest.raises(CorruptStoreError) as info:
        open_table(path, fast=fast)
    assert f"{path} is not a SQLite database or is damaged" in str(info.value)
    assert info.value.path == str(path)
    assert path.read_bytes() == content
    assert sqlite_files(tmp_path) == ["notes.db"]


@pytest.mark.parametrize("fast", [True, False])
def test_a_truncated_file_is_named(tmp_path: Path, fast: bool) -> None:
    good = tmp_path / "good.db"
    with hubkit.Store(good) as store:
        store.table(SPEC).upsert([Item(i, "x" * 200) for i in range(5000)])
    data = good.read_bytes()
    path = tmp_path / "cut.db"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptStoreError) as info, hubkit.Store(path, fast=fast) as store:
        store.table(SPEC).read_all()
    assert f"{path} is not a SQLite database or is damaged" in str(info.value)
    assert info.value.path == str(path)


# -- foreign databases ----------------------------------------------------------------------


def foreign(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize("fast", [True, False])
def test_a_refused_foreign_database_keeps_its_journal_mode(tmp_path: Path, fast: bool) -> None:
    path = tmp_path / "theirs.db"
    foreign(path, "CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT, extra TEXT)")
    before = path.read_bytes()
    with pytest.raises(StoreError, match=r"extra \(stored, not in Item\)"):
        open_table(path, fast=fast)
    assert journal_mode(path) == "delete"
    assert path.read_bytes() == before  # no hubkit table, no WAL switch: nothing changed
    assert sqlite_files(tmp_path) == ["theirs.db"]


@pytest.mark.parametrize("fast", [True, False])
def test_a_foreign_table_without_a_key_is_refused_at_open(tmp_path: Path, fast: bool) -> None:
    path = tmp_path / "theirs.db"
    foreign(path, "CREATE TABLE item (id INTEGER, name TEXT)", "INSERT INTO item VALUES (1, 'a')")
    before = path.read_bytes()
    with pytest.raises(StoreError) as info:
        open_table(path, fast=fast)
    assert str(info.value).startswith(
        "table 'item' was not created by hubkit and has no primary key or unique index on (id)"
    )
    assert path.read_bytes() == before
    assert journal_mode(path) == "delete"


@pytest.mark.parametrize("fast", [True, False])
def test_a_foreign_table_with_a_unique_key_is_adopted(tmp_path: Path, fast: bool) -> None:
    path = tmp_path / "theirs.db"
    foreign(
        path,
        "CREATE TABLE item (id INTEGER, name TEXT)",
        "CREATE UNIQUE INDEX item_id ON item (id)",
        "INSERT INTO item VALUES (1, 'a')",
    )
    with hubkit.Store(path, fast=fast) as store:
        table = store.table(SPEC)
        table.upsert([Item(1, "b"), Item(2, "c")])
        assert sorted(table.read_all().rows()) == [(1, "b"), (2, "c")]
    with hubkit.Store(path, fast=fast) as store:  # and opens again (its state is recorded)
        assert store.table(SPEC).count() == 2


def test_a_foreign_composite_key_needs_exactly_the_key_columns(tmp_path: Path) -> None:
    @dataclass
    class Pair:
        a: int
        b: int
        v: str

    path = tmp_path / "theirs.db"
    foreign(path, "CREATE TABLE pair (a INTEGER, b INTEGER, v TEXT, UNIQUE (b))")
    refused = r"no primary key or unique index on \(a, b\)"
    with pytest.raises(StoreError, match=refused), hubkit.Store(path) as store:
        store.table(hubkit.reflect(Pair, key=("a", "b")))
    foreign(path, "CREATE UNIQUE INDEX pair_ba ON pair (b, a)")  # any column order
    with hubkit.Store(path) as store:
        table = store.table(hubkit.reflect(Pair, key=("a", "b")))
        table.upsert([Pair(1, 2, "x")])
        table.upsert([Pair(1, 2, "y")])
        assert table.read_all().rows() == [(1, 2, "y")]


# -- read-only stores -----------------------------------------------------------------------
#
# File permissions do not bind root: the scenario runs in a child process as an ordinary user
# (as `nobody` when the tests run as root).


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the unprivileged child can use (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="hubkit-ro-"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        for sub in [folder, *folder.rglob("*")]:
            if sub.is_dir():
                sub.chmod(0o777)
        shutil.rmtree(folder)


def run_unprivileged(folder: Path, body: str) -> dict[str, object]:
    preexec = None
    if os.geteuid() == 0:

        def preexec() -> None:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)

    head = textwrap.dedent(
        """
        import json, os, sys
        from dataclasses import dataclass
        import hubkit

        @dataclass
        class Item:
            id: int
            name: str

        SPEC = hubkit.reflect(Item, key="id")
        DATA = sys.argv[1]
        os.mkdir(DATA)
        out = {}

        def attempt(store):
            table = store.table(SPEC)
            rows = sorted(table.read_all().rows())
            try:
                table.upsert([Item(2, "b")])
                return rows, "written"
            except hubkit.ReadOnlyStoreError as exc:
                return rows, [str(exc), exc.path]

        def files():
            return sorted(name for name in os.listdir(DATA) if ".db" in name)
        """
    )
    script = folder / "scenario.py"
    script.write_text(head + textwrap.dedent(body) + "\nprint(json.dumps(out))\n")
    script.chmod(0o644)
    data = folder / "data"  # made by the child, so that it owns it
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HUBKIT_HOME": str(folder / "home"),
        "HOME": str(folder),
        "HUBKIT_PROGRESS": "quiet",
    }
    done = subprocess.run(
        [sys.executable, str(script), str(data)],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
        timeout=300,
        preexec_fn=preexec,  # this test starts no threads
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_read_only_file_is_read_leaving_nothing_that_blocks_later_writes(
    shared_dir: Path,
) -> None:
    out = run_unprivileged(
        shared_dir,
        """
        path = os.path.join(DATA, "ro.db")
        with hubkit.Store(path) as store:
            store.table(SPEC).upsert([Item(1, "a")])
        os.chmod(path, 0o444)
        for fast in (True, False):
            with hubkit.Store(path, fast=fast) as store:
                out[f"read {fast}"], out[f"write {fast}"] = attempt(store)
            out[f"files {fast}"] = files()
        os.chmod(path, 0o644)
        with hubkit.Store(path) as store:
            out["after"] = attempt(store)
        out["files after"] = files()
        """,
    )
    path = str(shared_dir / "data" / "ro.db")
    for fast in (True, False):
        assert out[f"read {fast}"] == [[1, "a"]]
        assert out[f"write {fast}"] == [
            f"store {path} is open read-only (the file is not writable (mode 444)): hubkit "
            "cannot write to it. Make it writable, then open a new Store",
            path,
        ]
        assert out[f"files {fast}"] == ["ro.db"]  # no 0444 -wal/-shm left behind
    assert out["after"] == [[[1, "a"]], "written"]
    assert out["files after"] == ["ro.db"]


def test_a_store_in_a_read_only_folder_is_read_and_refuses_writes(shared_dir: Path) -> None:
    out = run_unprivileged(
        shared_dir,
        """
        path = os.path.join(DATA, "x.db")
        with hubkit.Store(path) as store:
            store.table(SPEC).upsert([Item(1, "a")])
        os.chmod(DATA, 0o555)
        try:
            for fast in (True, False):
                with hubkit.Store(path, fast=fast) as store:
                    out[f"read {fast}"], out[f"write {fast}"] = attempt(store)
            try:
                hubkit.Store(os.path.join(DATA, "new.db"))
            except hubkit.StorePathError as exc:
                out["new"] = str(exc)
        finally:
            os.chmod(DATA, 0o755)
        out["files"] = files()
        with hubkit.Store(path) as store:
            out["after"] = attempt(store)
        """,
    )
    data = shared_dir / "data"
    for fast in (True, False):
        assert out[f"read {fast}"] == [[1, "a"]]
        write = out[f"write {fast}"]
        assert isinstance(write, list) and f"its folder {data} is not writable" in write[0]
    assert out["new"] == f"cannot create store {data / 'new.db'}: its folder {data} is not writable"
    assert out["files"] == ["x.db"]
    assert out["after"] == [[[1, "a"]], "written"]


def test_a_read_only_file_that_is_not_a_database_is_named(shared_dir: Path) -> None:
    out = run_unprivileged(
        shared_dir,
        """
        path = os.path.join(DATA, "junk.db")
        with open(path, "wb") as f:
            f.write(b"not sqlite" * 500)
        os.chmod(path, 0o444)
        for fast in (True, False):
            try:
                hubkit.Store(path, fast=fast).table(SPEC)
            except hubkit.CorruptStoreError as exc:
                out[f"error {fast}"] = [str(exc), exc.path]
        out["files"] = files()
        """,
    )
    path = str(shared_dir / "data" / "junk.db")
    for fast in (True, False):
        error = out[f"error {fast}"]
        assert isinstance(error, list) and error[1] == path
        assert f"{path} is not a SQLite database or is damaged" in error[0]
    assert out["files"] == ["junk.db"]
