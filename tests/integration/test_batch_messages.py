"""The nightly message batch (``serving.batch_messages``) on a tiny store whose ids and channels
are not the demo's, with a tiny ``message_intent`` champion in a tmp sqlite MLflow: message,
contact and deal tags with provenance, quote / competitor / ticket tasks to the right people,
reruns that write nothing new, a killed run that ends as a clean one, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from crm_predict.crm_store.db import make_engine, session_factory, upgrade
from crm_predict.crm_store.demo_messages import generate_messages
from crm_predict.crm_store.models import Contact, Deal, Message, Tag, Task, Ticket, User
from crm_predict.serving import batch_messages as B
from crm_predict.training import message_intent as mi
from sqlalchemy import select

from crm_predict.core import messages as M
from crm_predict.core import tickets as T
from crm_predict.core.rules import RULES
from crm_predict.core.settings import Settings

AT = datetime(2026, 6, 30, 12)
REP, MANAGER = 7001, 7002
# contact id → owner; a foreign CRM's large, sparse ids.
ANN, BOB, CHEN, DORA = 900_011, 900_052, 900_093, 900_140
DEAL = 61_000_003

# (id, contact, deal, channel, direction, hours before AT, text): the tiny champion reads each
# as the comment says (asserted in test_the_champion_reads_the_tiny_store_as_written).
MESSAGES = [
    (10_001, ANN, DEAL, "portal", "inbound", 300, "Could you send us a quote for 50 licenses of SalesBox?"),  # quote, satisfied
    (10_007, ANN, DEAL, "sms", "inbound", 30, "We are also talking to HubSpot, why should we pick you over them?"),  # comparison
    (10_010, ANN, None, "sms", "outbound", 29, "Happy to explain, here is our comparison sheet."),  # not read
    (10_020, BOB, None, "portal", "inbound", 200, "The app keeps crashing and nobody answers, this is unacceptable."),  # complaint
    (10_021, BOB, None, "portal", "inbound", 100, "Thanks, the new report works great!"),
    (10_022, BOB, None, "portal", "inbound", 50, "Does SalesBox support single sign-on?"),
    (10_030, CHEN, None, "wechat", "inbound", 20, "你们的报价是多少？我们需要100个账号。"),  # quote, no owner
    (10_040, DORA, None, "portal", "inbound", 10, "Привет, сколько стоит лицензия?"),  # unreadable
]  # fmt: skip


@pytest.fixture(scope="module")
def champion_uri(tmp_path_factory):
    """A sqlite MLflow with a tiny ``message_intent`` trained on the demo generator (champion)."""
    import mlflow
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("mlflow_messages")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        client = MlflowClient(uri, uri)
        data = mi.prepare(generate_messages(600, 3, datetime(2025, 1, 1), datetime(2025, 7, 1)))
        trained = mi.train(client, data, n_trials=1, lexicons=False)
        client.set_registered_model_alias(B.MODEL_NAME, "champion", trained.version)
        mlflow.set_tracking_uri(None)
    return uri


@pytest.fixture
def client(champion_uri):
    from mlflow import MlflowClient

    return MlflowClient(champion_uri, champion_uri)


def build_store(session) -> None:
    """Two users (a rep and the rep's manager), four contacts, one deal, the messages above and
    three tickets: open 30 h (escalates), open 3 h (not yet), closed yesterday (survey)."""
    old = AT - timedelta(days=400)
    session.add_all([User(id=MANAGER, name="Mia"), User(id=REP, name="Raj", manager_id=MANAGER)])
    session.flush()
    session.add_all(
        [
            Contact(id=i, first_name=str(i), owner_id=owner, region=region, created_at=old, updated_at=old)
            for i, owner, region in ((ANN, REP, "north"), (BOB, REP, "north"), (CHEN, None, "south"), (DORA, REP, "west"))
        ]
    )  # fmt: skip
    session.flush()
    session.add(
        Deal(
            id=DEAL, contact_id=ANN, owner_id=REP, stage="proposal", stage_entered_at=old,
            created_at=old, updated_at=old,
        )
    )  # fmt: skip
    session.flush()
    for mid, contact, deal, channel, direction, hours, body in MESSAGES:
        add_message(
            session, mid, contact, deal, channel, direction, AT - timedelta(hours=hours), body
        )
    session.add_all(
        [
            Ticket(id=501, contact_id=ANN, opened_at=AT - timedelta(hours=30), priority="Sev-A", subject="Login"),
            Ticket(id=502, contact_id=BOB, opened_at=AT - timedelta(hours=3), priority="low"),
            Ticket(id=503, contact_id=BOB, opened_at=AT - timedelta(days=3), closed_at=AT - timedelta(days=1), priority="2"),
        ]
    )  # fmt: skip
    session.commit()


def add_message(session, mid, contact, deal, channel, direction, sent_at, body) -> None:
    session.add(
        Message(
            id=mid, contact_id=contact, deal_id=deal, channel=channel, direction=direction,
            sent_at=sent_at, text=body, created_at=sent_at,
        )
    )  # fmt: skip


def _settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def _tags(session) -> dict:
    rows = session.scalars(select(Tag).order_by(Tag.entity_type, Tag.entity_id, Tag.name))
    return {
        (t.entity_type, t.entity_id, t.name): (t.value, t.model_name, t.model_version, t.scored_at)
        for t in rows
    }


def _tasks(session) -> list[tuple]:
    rows = session.scalars(select(Task).order_by(Task.dedup_key))
    return [(t.dedup_key, t.type, t.entity_id, t.owner_id, t.due_at, t.reason) for t in rows]


def _run(session, client, tmp_path, rules=RULES, **kw):
    return B.run_message_batch(session, client, _settings(tmp_path), AT, rules, **kw)


def test_the_champion_reads_the_tiny_store_as_written(sqlite_session, client, tmp_path):
    build_store(sqlite_session)
    result = _run(sqlite_session, client, tmp_path)
    tags = _tags(sqlite_session)
    intent = {mid: tags.get(("message", mid, "intent"), (None,))[0] for mid, *_ in MESSAGES}
    assert intent == {
        10_001: "quote_request", 10_007: "competitor_comparison", 10_010: None,
        10_020: "after_sales_support", 10_021: intent[10_021], 10_022: "technical_consultation",
        10_030: "quote_request", 10_040: None,
    }  # fmt: skip
    sentiment = {mid: tags[("message", mid, "sentiment")][0] for mid in (10_020, 10_021)}
    assert sentiment == {10_020: "complaining", 10_021: "satisfied"}
    assert tags[("message", 10_040, B.TAG_UNREADABLE)][0].startswith("text is in no language")
    assert (result.messages_scored, result.messages_unreadable) == (6, 1)
    # Provenance of every tag: the champion's name and version, scored as of the run.
    assert {v[1:] for v in tags.values()} == {("message_intent", result.model_version, AT)}


def test_rerun_writes_the_same_tags_and_creates_no_task(session, client, tmp_path):
    build_store(session)
    first = _run(session, client, tmp_path)
    tags, tasks = _tags(session), _tasks(session)
    again = _run(session, client, tmp_path)

    assert first.skipped is None and first.messages_scored == 6
    assert again.messages_scored == 0 and again.messages_unreadable == 0
    assert again.tasks_created == 0 and _tasks(session) == tasks
    assert _tags(session) == tags
    # Contact and deal tags from the stored readings.
    assert tags[("contact", ANN, M.TAG_LATEST_INTENT)][0] == "competitor_comparison"
    assert tags[("deal", DEAL, M.TAG_LATEST_INTENT)][0] == "competitor_comparison"
    assert tags[("contact", CHEN, M.TAG_LATEST_INTENT)][0] == "quote_request"
    assert tags[("contact", BOB, M.TAG_LATEST_INTENT)][0] == "technical_consultation"
    priority = tags[("message", 10_022, M.TAG_NEED_PRIORITY)][0]
    assert tags[("contact", BOB, M.TAG_NEED_PRIORITY)][0] == priority  # the newest message's
    assert ("contact", DORA, M.TAG_LATEST_INTENT) not in tags  # nothing read
    by_type = {(t[1], t[2]): t for t in tasks}
    assert sorted(by_type) == sorted(
        [
            (M.TASK_COMPETITOR, ANN), (M.TASK_QUOTE_FOLLOW_UP, CHEN),  # 10_001 is too old (300 h)
            (T.TASK_ESCALATION, ANN), (T.TASK_SURVEY, BOB),
        ]
    )  # fmt: skip
    # Escalation to the owner's manager, survey and comparison to the owner, the ownerless
    # contact's quote to the queue.
    assert by_type[(T.TASK_ESCALATION, ANN)][3] == MANAGER
    assert by_type[(T.TASK_SURVEY, BOB)][3] == REP
    competitor = by_type[(M.TASK_COMPETITOR, ANN)]
    assert competitor[3] == REP and "Compared with HubSpot in a sms message" in competitor[5]
    quote = by_type[(M.TASK_QUOTE_FOLLOW_UP, CHEN)]
    assert quote[3] is None and quote[5].startswith("[queue:unassigned] Quote requested")
    assert first.task_counts == {M.TASK_COMPETITOR: 1, M.TASK_QUOTE_FOLLOW_UP: 1, T.TASK_ESCALATION: 1, T.TASK_SURVEY: 1}  # fmt: skip


def test_complaint_tendency_follows_the_configured_share(sqlite_session, client, tmp_path):
    """Bob: 1 of 3 inbound messages in the window complaining (33 %)."""
    build_store(sqlite_session)
    _run(sqlite_session, client, tmp_path)
    assert _tags(sqlite_session)[("contact", BOB, M.TAG_COMPLAINT)][0] == "true"  # > 30 %
    strict = RULES.model_copy(
        update={"messages": RULES.messages.model_copy(update={"complaint_share": 0.4})}
    )
    _run(sqlite_session, client, tmp_path, strict)
    assert _tags(sqlite_session)[("contact", BOB, M.TAG_COMPLAINT)][0] == "false"  # not > 40 %
    # A shorter window leaves Bob's complaint (200 h ago) out: 0 of 2.
    short = RULES.model_copy(
        update={"messages": RULES.messages.model_copy(update={"complaint_window_days": 5})}
    )
    _run(sqlite_session, client, tmp_path, short)
    assert _tags(sqlite_session)[("contact", BOB, M.TAG_COMPLAINT)][0] == "false"


def test_a_complaint_that_leaves_the_window_clears_the_tag_on_a_later_night(sqlite_session, client, tmp_path):  # fmt: skip
    """No new message and the same rules: the window moving past Bob's complaint (200 h before
    AT, a 10-day window) is what changes his tag, two nights later."""
    rules = RULES.model_copy(
        update={"messages": RULES.messages.model_copy(update={"complaint_window_days": 10})}
    )
    build_store(sqlite_session)
    first = B.run_message_batch(sqlite_session, client, _settings(tmp_path), AT, rules)
    assert first.contacts_full  # no finished run before: every contact
    assert _tags(sqlite_session)[("contact", BOB, M.TAG_COMPLAINT)][0] == "true"
    later = AT + timedelta(days=2)
    night = B.run_message_batch(sqlite_session, client, _settings(tmp_path), later, rules)
    assert not night.contacts_full and night.contacts_tagged == 1  # Bob alone
    assert _tags(sqlite_session)[("contact", BOB, M.TAG_COMPLAINT)][0] == "false"


def test_a_nightly_run_reads_only_new_messages(sqlite_session, client, tmp_path):
    build_store(sqlite_session)
    _run(sqlite_session, client, tmp_path)
    add_message(sqlite_session, 10_050, BOB, None, "portal", "inbound", AT - timedelta(hours=1), "How much is the annual price for 20 seats?")  # fmt: skip
    sqlite_session.commit()
    later = _run(sqlite_session, client, tmp_path)
    assert later.messages_scored == 1 and later.messages_unreadable == 0
    assert _tags(sqlite_session)[("contact", BOB, M.TAG_LATEST_INTENT)][0] == "quote_request"
    assert later.task_counts[M.TASK_QUOTE_FOLLOW_UP] == 1 and later.tasks_created == 1


@pytest.mark.parametrize("kill", ["reading", "contacts"])
def test_a_killed_run_rerun_ends_as_a_clean_run(tmp_path, client, monkeypatch, kill):
    """Killed after the first chunk of readings, or after all of them, before any contact tag;
    a one-day complaint window, so the rerun finds Ann's and Bob's contacts from their readings
    being newer than their tags, not from the window."""
    rules = RULES.model_copy(
        update={"messages": RULES.messages.model_copy(update={"complaint_window_days": 1})}
    )

    def store(name):
        engine = make_engine(f"sqlite:///{tmp_path / name}")
        upgrade(engine)
        session = session_factory(engine)()
        build_store(session)
        return session

    clean = store("clean.db")
    _run(clean, client, tmp_path, rules)
    killed = store("killed.db")
    monkeypatch.setattr(B, "CHUNK", 2)  # several chunks of messages, contacts and tasks

    def dies(*args, **kwargs):
        raise KeyboardInterrupt  # the kill

    if kill == "contacts":
        monkeypatch.setattr(M, "contact_tags", dies)
        progress = None
    else:
        progress = lambda name, total: dies  # noqa: E731 - after the first committed chunk
    with pytest.raises(KeyboardInterrupt):
        _run(killed, client, tmp_path, rules, progress=progress)
    killed.rollback()
    monkeypatch.undo()
    rerun = _run(killed, client, tmp_path, rules)

    assert rerun.messages_scored == (0 if kill == "contacts" else 4)  # 2 read before the kill
    assert _tags(killed) == _tags(clean)
    assert ("contact", ANN, M.TAG_LATEST_INTENT) in _tags(killed)
    assert [t[:5] for t in _tasks(killed)] == [t[:5] for t in _tasks(clean)]
    clean.close(), killed.close()


def test_no_champion_is_a_skip_that_writes_nothing(sqlite_session, mlflow_client, tmp_path):
    build_store(sqlite_session)
    result = B.run_message_batch(sqlite_session, mlflow_client, _settings(tmp_path), AT, RULES)
    assert result.skipped == "no message_intent model with alias 'champion' in the registry"
    assert result.as_dict()["skipped"] == result.skipped
    assert _tags(sqlite_session) == {} and _tasks(sqlite_session) == []
