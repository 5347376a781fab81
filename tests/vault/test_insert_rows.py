"""``insert_rows``: the bulk insert issuance and the audit log use stores what Core's insert stores."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import JSON, Column, Date, Integer, LargeBinary, MetaData, String, Table, insert, select

from tests._db import database_url  # noqa: F401  (fixture)
from vault import Database, DatabaseConflict, DatabaseError
from vault._db import insert_rows
from vault._models import UTCDateTime

DbAndMetadata = tuple[Database, MetaData]


@pytest.fixture
def db_metadata(database_url: str) -> Iterator[DbAndMetadata]:  # noqa: F811
    """A database and the metadata each test declares its tables in; they are dropped after."""
    database, metadata = Database(database_url), MetaData()
    yield database, metadata
    metadata.drop_all(database.engine)
    database.dispose()


def _table(metadata: MetaData, name: str) -> Table:
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True),
        Column("label", String(50), unique=True),
        Column("data", JSON),
        Column("day", Date),
        Column("at", UTCDateTime()),
        Column("blob", LargeBinary),
    )


ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "label": "营业执照",
        "data": {"名称": "张记早点铺", "n": 7, "nested": [1, {"x": None}]},
        "day": date(2024, 3, 1),
        "at": datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=timezone(timedelta(hours=8))),
        "blob": b"\x00\xff ciphertext",
    },
    {"id": 2, "label": "second", "data": None, "day": None, "at": None, "blob": None},
    {
        "id": 3,
        "label": "third",
        "data": [],
        "day": date(1999, 12, 31),
        "at": datetime(2000, 1, 1, tzinfo=UTC),
    },
]


def test_insert_rows_stores_what_core_stores(db_metadata: DbAndMetadata) -> None:
    db, metadata = db_metadata
    ours, core = _table(metadata, "t_ours"), _table(metadata, "t_core")
    metadata.create_all(db.engine)
    rows = [ROWS[0], ROWS[1], {**ROWS[2], "blob": b""}]
    with db.write() as s:
        insert_rows(s, ours, rows)
        s.execute(insert(core), rows)
    with db.read() as s:
        # The raw stored values, not only what the types read back, must be the same.
        raw_ours = s.execute(select(*[c.cast(String) if c.name == "at" else c for c in ours.c])).all()
        raw_core = s.execute(select(*[c.cast(String) if c.name == "at" else c for c in core.c])).all()
        read_back = s.execute(select(ours).order_by(ours.c.id)).all()
    assert raw_ours == raw_core
    assert read_back[0].data == ROWS[0]["data"]
    assert read_back[0].at == ROWS[0]["at"] and read_back[0].at.utcoffset() == timedelta(0)
    assert read_back[0].day == date(2024, 3, 1) and read_back[0].blob == b"\x00\xff ciphertext"
    assert (read_back[1].data, read_back[1].day, read_back[1].at) == (None, None, None)


def test_insert_rows_refuses_a_duplicate_and_stores_none_of_the_batch(db_metadata: DbAndMetadata) -> None:
    db, metadata = db_metadata
    table = _table(metadata, "t_dup")
    metadata.create_all(db.engine)
    with db.write() as s:
        insert_rows(s, table, [ROWS[0]])
    with pytest.raises(DatabaseConflict), db.write() as s:
        insert_rows(s, table, [{**ROWS[2], "id": 10}, {**ROWS[1], "label": "营业执照"}])
    with db.read() as s:
        assert s.execute(select(table.c.id)).scalars().all() == [1]
    # Rows must all name the same columns (as Core's executemany requires): a programming
    # error (KeyError on SQLite, Core's own error on PostgreSQL), and nothing is stored.
    with pytest.raises((KeyError, DatabaseError)), db.write() as s:
        insert_rows(s, table, [{"id": 20, "label": "a"}, {"id": 21}])
    with db.read() as s:
        assert s.execute(select(table.c.id)).scalars().all() == [1]


def test_insert_rows_of_one_column_still_converts_it(db_metadata: DbAndMetadata) -> None:
    db, metadata = db_metadata
    table = Table("t_one", metadata, Column("data", JSON))
    metadata.create_all(db.engine)
    with db.write() as s:
        insert_rows(s, table, [{"data": {"名称": "一"}}, {"data": [1, 2]}])
    with db.read() as s:
        stored = s.execute(select(table.c.data)).scalars().all()
    assert sorted(stored, key=str) == sorted([{"名称": "一"}, [1, 2]], key=str)
