"""The tag upsert's two ways of writing (a chunk of new keys goes straight into tags, a chunk with
stored keys through the staged join) give the same current values and history, on each backend."""

from datetime import datetime, timedelta

import pandas as pd
from crm_predict.crm_store.models import Tag, TagHistory
from crm_predict.crm_store.repository import current_tags, tag_history, upsert_tags
from sqlalchemy import select, text

NOW = datetime(2026, 1, 15, 3, 0, 0, 123456)
LATER = NOW + timedelta(days=1)


def _tags(ids, names, value="a", model="clv", when=NOW):
    """Name-major, as the write-back builds a chunk."""
    return pd.concat(
        [
            pd.DataFrame(
                {
                    "entity_type": "contact",
                    "entity_id": list(ids),
                    "name": name,
                    "value": value,
                    "model_name": model,
                    "model_version": "1",
                    "run_id": "r",
                    "scored_at": when,
                }
            )  # fmt: skip
            for name in names
        ],
        ignore_index=True,
    )


def _current(session):
    rows = session.execute(
        select(Tag.entity_id, Tag.name, Tag.value, Tag.model_version, Tag.scored_at).order_by(
            Tag.entity_id, Tag.name
        )
    )
    return [tuple(r) for r in rows]


def test_new_names_beside_another_models_tags_are_written_whole(session):
    """Another model's tags on the same entities do not make a chunk's keys stored: every row of
    the new names lands once, and the other model's tags are untouched."""
    upsert_tags(session, _tags(range(1, 11), ["churn_risk"], "low", "churn"), NOW)
    session.commit()
    upsert_tags(session, _tags(range(1, 11), ["rfm_segment", "clv_tier"], "gold"), NOW)
    session.commit()
    rows = _current(session)
    assert len(rows) == 30
    assert {(n, v) for _, n, v, _, _ in rows} == {
        ("churn_risk", "low"), ("clv_tier", "gold"), ("rfm_segment", "gold")
    }  # fmt: skip
    assert session.query(TagHistory).count() == 0


def test_chunk_mixing_stored_and_new_keys_updates_once_and_inserts_the_rest(session):
    upsert_tags(session, _tags(range(5, 11), ["clv_tier"], "gold"), NOW)
    session.commit()
    chunk = _tags(range(1, 16), ["clv_tier"], "silver", when=LATER)
    chunk.loc[chunk["entity_id"] == 7, "value"] = "gold"  # unchanged value: re-stamped only
    assert upsert_tags(session, chunk, LATER) == 15
    session.commit()
    rows = _current(session)
    assert [r[0] for r in rows] == list(range(1, 16))
    assert all(r[4] == LATER for r in rows)
    assert dict((r[0], r[2]) for r in rows)[7] == "gold"
    history = session.scalars(select(TagHistory).order_by(TagHistory.entity_id)).all()
    assert [(h.entity_id, h.value, h.scored_at, h.replaced_at) for h in history] == [
        (i, "gold", NOW, LATER) for i in (5, 6, 8, 9, 10)
    ]


def test_a_stored_key_at_the_edge_of_a_chunks_range_is_not_duplicated(session):
    upsert_tags(session, _tags([20], ["clv_tier"], "gold"), NOW)
    session.commit()
    assert upsert_tags(session, _tags(range(1, 21), ["clv_tier"], "bronze", when=LATER), LATER) == 20  # fmt: skip
    session.commit()
    assert session.query(Tag).count() == 20
    assert current_tags(session, "contact", 20)["clv_tier"].value == "bronze"
    assert [h.value for h in tag_history(session, "contact", 20, "clv_tier")] == ["gold"]


def test_text_with_quotes_commas_and_line_breaks_reads_back_either_way(session):
    odd = ["it's", 'say "hi"', "a,b", "two\nlines", "cr\r\nlf", "", "ünï"]
    first = _tags(range(1, len(odd) + 1), ["note"]).assign(value=odd)
    upsert_tags(session, first, NOW)  # new keys: straight into tags
    session.commit()
    assert [r[2] for r in _current(session)] == odd
    again = first.assign(value=list(reversed(odd)), scored_at=LATER)
    upsert_tags(session, again, LATER)  # stored keys: the staged join
    session.commit()
    assert [r[2] for r in _current(session)] == list(reversed(odd))
    assert sorted(h.value for h in session.query(TagHistory)) == sorted(
        v for v, w in zip(odd, reversed(odd), strict=True) if v != w
    )


def test_a_failed_chunk_leaves_nothing_behind(session):
    """New keys written straight into tags roll back with the rest of the chunk's transaction."""
    upsert_tags(session, _tags(range(1, 4), ["clv_tier"]), NOW)
    session.rollback()
    assert session.execute(text("SELECT COUNT(*) FROM tags")).scalar_one() == 0
    upsert_tags(session, _tags(range(1, 4), ["clv_tier"]), NOW)
    session.commit()
    assert session.query(Tag).count() == 3
