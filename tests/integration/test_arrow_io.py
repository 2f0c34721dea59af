"""The Arrow reader's promises on both backends: the frames ``pd.read_sql`` gave (types, nulls,
row order), in id-range chunks or not, one snapshot for all readers, the session's own uncommitted
rows seen; the snapshot export and load round-trip them."""

from datetime import datetime

import pandas as pd
import pyarrow.parquet as pq
import pytest
from crm_predict.crm_store import arrow_io
from crm_predict.crm_store.demo import generate_demo
from crm_predict.crm_store.models import ENTITY_MODELS, Contact
from crm_predict.crm_store.repository import read_table
from crm_predict.features import export as fx
from sqlalchemy import create_engine, select, text


@pytest.fixture
def demo(session, settings):
    generate_demo(session, settings, 120, seed=5)
    session.commit()
    return session


@pytest.fixture
def adbc(monkeypatch):
    """Every read through ADBC, in id ranges of 500 rows (the demo's tables span several)."""
    monkeypatch.setattr(arrow_io, "SMALL_ROWS", 0)
    monkeypatch.setattr(arrow_io, "CHUNK_ROWS", 500)
    run, queries = arrow_io._read_parallel, []

    def counted(connect, tasks, workers, options):
        queries.extend(sql for sql, _ in tasks)
        return run(connect, tasks, workers, options)

    monkeypatch.setattr(arrow_io, "_read_parallel", counted)
    yield queries
    assert any(" >= " in sql for sql in queries)  # ADBC read, in more than one range


def _read_sql(session, table: str) -> pd.DataFrame:
    frame = pd.read_sql(select(ENTITY_MODELS[table].__table__), session.connection())
    for column in ENTITY_MODELS[table].__table__.c:
        # read_sql leaves a column that is NULL throughout as objects; read_table types it as
        # it types the column's NULLs elsewhere (datetimes NaT, integers NaN).
        if frame[column.name].isna().all():
            if column.type.python_type is datetime:
                frame[column.name] = pd.to_datetime(frame[column.name])
            elif column.type.python_type is int:
                frame[column.name] = frame[column.name].astype("float64")
    return frame


@pytest.mark.parametrize("path", ["adbc", "rows"])
def test_read_table_gives_the_frames_read_sql_gave(demo, request, path):
    queries = request.getfixturevalue("adbc") if path == "adbc" else []
    for table in ENTITY_MODELS:
        expected = _read_sql(demo, table)
        assert len(expected) > 0, table
        pd.testing.assert_frame_equal(read_table(demo, table), expected, check_exact=True)
    demo.commit()
    if queries and demo.get_bind().dialect.name == "postgresql":
        assert any("ctid >= " in sql for sql in queries)  # ranges of pages, not of ids


def test_nullable_columns_keep_read_sql_dtypes(demo, adbc):
    frame = read_table(demo, "activities")
    assert frame["lead_id"].isna().any() and frame["lead_id"].dtype == "float64"
    assert frame["contact_id"].dtype == "int64"
    assert frame["occurred_at"].dtype == "datetime64[ns]"
    assert set(frame["responded"].dropna().map(type)) == {bool}
    assert read_table(demo, "orders", ["contact_id", "amount"]).columns.tolist() == [
        "contact_id",
        "amount",
    ]


def test_a_column_null_for_its_first_rows_keeps_its_type(session, adbc, monkeypatch):
    # SQLite's driver infers a column's type from the first rows of a result (1024 by default):
    # here the first range holds 1100 NULLs, then text and datetimes.
    monkeypatch.setattr(arrow_io, "CHUNK_ROWS", 1200)
    rows = [
        {"id": i, "membership_level": None if i <= 1100 else "gold", "points": None,
         "signup_at": None if i <= 1100 else datetime(2026, 1, 2, 3, 4, 5, 600000),
         "created_at": datetime(2026, 1, 1), "updated_at": datetime(2026, 1, 1)}
        for i in range(1, 1601)
    ]  # fmt: skip
    session.execute(Contact.__table__.insert(), rows)
    session.commit()
    frame = read_table(session, "contacts")
    assert frame["membership_level"].tolist() == [None] * 1100 + ["gold"] * 500
    assert frame["signup_at"].iloc[-1] == pd.Timestamp("2026-01-02 03:04:05.6")
    assert frame["signup_at"].dtype == "datetime64[ns]" and frame["points"].isna().all()


def test_uncommitted_rows_are_read_back_by_their_session(demo, adbc):
    before = len(read_table(demo, "orders"))
    demo.execute(
        text("INSERT INTO orders (contact_id, ordered_at, amount, items, created_at) "
             "VALUES (1, '2026-06-01', 9.5, 1, '2026-06-01')")
    )  # fmt: skip
    assert len(read_table(demo, "orders")) == before + 1
    demo.rollback()
    assert len(read_table(demo, "orders")) == before


def test_all_readers_see_the_sessions_snapshot(demo, request):
    if demo.get_bind().dialect.name != "postgresql":
        pytest.skip("a snapshot is shared across connections on PostgreSQL only")
    request.getfixturevalue("adbc")
    demo.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    before = len(read_table(demo, "activities"))
    other = create_engine(demo.get_bind().url)
    with other.begin() as conn:  # another writer commits while the session's snapshot is open
        conn.execute(text("DELETE FROM activities WHERE id % 2 = 0"))
    other.dispose()
    assert len(read_table(demo, "activities")) == before
    demo.commit()
    assert len(read_table(demo, "activities")) < before


def test_a_reader_that_fails_fails_the_read_and_lets_the_session_go_on(demo, adbc, monkeypatch):
    conform = arrow_io._conform

    def broken(table, schema):
        if "lead_id" in schema.names:
            raise RuntimeError("disk gone")
        return conform(table, schema)

    monkeypatch.setattr(arrow_io, "_conform", broken)
    with pytest.raises(RuntimeError, match="disk gone"):
        arrow_io.read_tables(demo, {"orders": None, "activities": None})
    monkeypatch.setattr(arrow_io, "_conform", conform)
    assert (
        len(read_table(demo, "activities"))
        == demo.execute(text("SELECT COUNT(*) FROM activities")).scalar_one()
    )


def test_datetime_text_arrow_cannot_parse_keeps_its_wall_time():
    import pyarrow as pa

    column = pa.chunked_array([["2026-01-02 03:04:05+02:00", None]])
    cast = arrow_io._cast(column, pa.timestamp("us"))
    assert cast.to_pylist() == [datetime(2026, 1, 2, 3, 4, 5), None]


def test_snapshot_export_round_trips_the_old_frames(demo, settings, adbc):
    exported = fx.export_snapshots(demo, settings)
    demo.commit()
    loaded = fx.load_snapshots(settings)
    assert list(exported) == list(loaded) == list(fx.MODEL_TABLES)
    for name, frame in exported.items():
        old = _read_sql(demo, name)
        column = fx.EVENT_TIME[name]
        old[fx.TS] = old[column]
        pd.testing.assert_frame_equal(frame, old, check_exact=True)
        pd.testing.assert_frame_equal(loaded[name], old, check_exact=True)
        path = fx.snapshot_dir(settings) / f"{name}.parquet"
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "SNAPPY"
    assert not list(fx.snapshot_dir(settings).glob(".*"))  # no part file left behind


def test_load_snapshots_reads_only_the_columns_asked_for(demo, settings):
    fx.export_snapshots(demo, settings)
    demo.commit()
    full = fx.load_snapshots(settings)
    some = fx.load_snapshots(settings, {"activities": ["contact_id", "type"], "orders": None})
    assert list(some) == ["activities", "orders"]
    pd.testing.assert_frame_equal(some["activities"], full["activities"][["contact_id", "type"]])
    pd.testing.assert_frame_equal(some["orders"], full["orders"])
    cats = fx.load_snapshots(settings, {"activities": ["type", "occurred_at"]}, strings="category")
    assert isinstance(cats["activities"]["type"].dtype, pd.CategoricalDtype)
    assert cats["activities"]["type"].astype(object).equals(full["activities"]["type"])
    arrow = fx.load_snapshots(settings, {"activities": ["type"]}, strings="arrow")
    assert arrow["activities"]["type"].astype(object).equals(full["activities"]["type"])
    with pytest.raises(ValueError, match="strings must be one of"):
        fx.load_snapshots(settings, strings="bytes")


def test_export_gives_back_only_the_columns_asked_for(demo, settings, adbc):
    """The batch's export: every table written whole, only its columns converted, as the load of
    the same columns gives them."""
    columns = {"activities": ["contact_id", "type", "occurred_at"], "contacts": ["id", "region"]}
    exported = fx.export_snapshots(demo, settings, columns, strings="category")
    demo.commit()
    assert list(exported) == ["activities", "contacts"]
    loaded = fx.load_snapshots(settings, columns, strings="category")
    for name, column in (("activities", "type"), ("contacts", "region")):
        assert isinstance(exported[name][column].dtype, pd.CategoricalDtype)
        pd.testing.assert_frame_equal(
            exported[name].astype(object), loaded[name].astype(object), check_exact=True
        )
    whole = fx.load_snapshots(settings, {"orders": None})["orders"]
    assert len(whole) == demo.execute(text("SELECT COUNT(*) FROM orders")).scalar_one()


def test_a_sqlite_reader_process_answers_query_after_query(demo):
    """One reader process per connection: an error is an answer (the process goes on), a process
    that died is an error naming it."""
    if demo.get_bind().dialect.name != "sqlite":
        pytest.skip("SQLite's reader processes only")
    demo.commit()
    reader = arrow_io._SqliteProcessReader(demo.get_bind().url.database)
    try:
        first = reader.read("SELECT id FROM contacts ORDER BY id", {})
        with pytest.raises(RuntimeError, match="no such table: nowhere"):
            reader.read("SELECT * FROM nowhere", {})
        again = reader.read("SELECT id FROM contacts ORDER BY id", {})
        assert again.equals(first) and first.num_rows > 0
        reader.process.kill()
        reader.process.wait()  # dead before the request: its write fails, and close() still closes
        with pytest.raises(RuntimeError, match="SQLite reader process ended"):
            reader.read("SELECT 1", {})
    finally:
        reader.close()


def test_a_sqlite_read_leaves_the_store_connections_wal_alone(demo, request):
    """ADBC's own copy of SQLite reads in another process: in this one, closing it would drop the
    store connection's locks and delete the WAL under it (a corrupt store, seen in CI)."""
    from pathlib import Path

    if demo.get_bind().dialect.name != "sqlite":
        pytest.skip("SQLite's WAL and POSIX locks only")
    request.getfixturevalue("adbc")
    demo.execute(text("UPDATE contacts SET first_name = first_name || ''"))
    demo.commit()
    wal = Path(demo.get_bind().url.database + "-wal")
    assert wal.exists() and wal.stat().st_size > 0
    frames = arrow_io.read_tables(demo, {"contacts": None, "activities": None})
    assert len(frames["activities"]) > 0
    assert wal.exists()  # the store's connection still owns its WAL
    demo.execute(text("UPDATE contacts SET first_name = first_name || ''"))
    demo.commit()
    assert demo.execute(text("PRAGMA integrity_check")).scalar_one() == "ok"
