"""Import through a mapping: one run is one transaction on both backends, every bad input names
file, line, column and mapping key, vocabularies and value maps hold, merges keep what they merge
and a stage change writes history."""

from __future__ import annotations

from datetime import datetime

import pytest
from crm_predict.crm_store.importer import import_directory
from crm_predict.crm_store.mapping import load_mapping, parse_mapping
from crm_predict.crm_store.models import (
    ENTITY_MODELS,
    Activity,
    Contact,
    Deal,
    DealStageHistory,
    Lead,
    Message,
    Ticket,
)
from sqlalchemy import func, select

from crm_predict.core.errors import UserError

NOW = datetime(2026, 7, 1, 9, 0)
MAPPING = """
name: tiny
timezone: America/New_York
vocabulary:
  pipeline: {stages: [sql, demo, proposal, won, lost], won: [won], lost: [lost]}
  activity_categories: {event: [webinar], content: [content_download]}
entities:
  users:
    file: reps.csv
    columns: {external_id: rep, name: name, region: area, manager_id: boss}
  accounts:
    file: companies.csv
    columns: {external_id: cid, name: company, region: area}
  contacts:
    file: people.csv
    columns: {external_id: pid, account_id: cid, email: mail, phone: tel, role: title}
  leads:
    file: prospects.csv
    columns: {external_id: lid, contact_id: pid, region: area, owner_id: rep, created_at: created}
  deals:
    file: opps.csv
    columns: {external_id: oid, account_id: cid, stage: phase, created_at: created, closed_at: closed}
    values:
      stage: {"Demo booked": demo}
  activities:
    file: touches.csv
    columns: {external_id: tid, contact_id: pid, type: kind, occurred_at: at}
  tickets:
    file: cases.csv
    columns: {external_id: case, contact_id: pid, opened_at: opened, priority: prio}
  messages:
    file: notes.csv
    columns: {external_id: mid, contact_id: pid, deal_id: oid, ticket_id: case, channel: medium,
              direction: dir, sent_at: at, language: lang, text: body, intent: label}
    values:
      channel: {WeChat: wechat, "Phone call": call_note}
      direction: {in: inbound, out: outbound}
"""
FILES = {
    "reps.csv": "rep,name,area,boss\nr1,Ann,north,\nr2,Bob,north,r1\nr3,Cy,south,r1\n",
    "companies.csv": "cid,company,area\nacct_000001,Acme,north\nacct_000002,Blue,south\n",
    "people.csv": "pid,cid,mail,tel,title\n"
    "p1,acct_000001,ana@acme.example,+1 555 0100,CTO\n"
    "p2,acct_000001,ANA.WORK@acme.example,001 555 0100,\n"  # same phone: merged, email kept
    "p3,acct_000002,,,Engineer\n",  # no email, no phone: a contact all the same
    "prospects.csv": "lid,pid,area,rep,created\nlead_1,p1,north,,2026-03-01 09:00\n"
    "lead_2,p3,south,r3,2026-03-02 10:00\n",
    "opps.csv": "oid,cid,phase,created,closed\no1,acct_000001,sql,2026-03-05,\n"
    "o2,acct_000002,Demo booked,2026-03-06,\no3,acct_000002,won,2026-02-01,2026-04-01\n",
    "touches.csv": "tid,pid,kind,at\nt1,p1,Webinar,2026-03-02T10:00:00Z\n"
    "t2,p3,content_download,2026-03-03 08:00\nt3,p1,fax,2026-03-04\n",
    "cases.csv": "case,pid,opened,prio\nk1,p1,2026-03-06 09:00,Urgent\nk2,p3,2026-03-07,3\n",
    "notes.csv": "mid,pid,oid,case,medium,dir,at,lang,body,label\n"
    "m1,p1,o1,,WeChat,in,2026-03-05 10:00,zh,报价多少钱？,quote_request\n"
    'm2,p1,,k1,Email,in,2026-03-06 09:00,en,"It crashed, again.",after_sales_support\n'
    "m3,p3,,,Phone call,out,2026-03-07 11:00,EN,Called back: all fine now,\n",
}


def _write(tmp_path, files: dict[str, str] = FILES, mapping: str = MAPPING):
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    return parse_mapping(mapping, "tiny.yaml")


def _rows(session) -> dict[str, int]:
    return {
        name: session.scalar(select(func.count()).select_from(model))
        for name, model in ENTITY_MODELS.items()
    }


def test_a_mapped_export_imports_with_vocabularies_value_maps_and_merges(session, tmp_path):
    results = import_directory(session, _write(tmp_path), tmp_path, now=NOW)
    session.commit()
    by_entity = {r.entity: r for r in results}
    assert by_entity["contacts"].merged == 1 and by_entity["contacts"].inserted == 2
    assert by_entity["leads"].owners_assigned == 1
    assert by_entity["activities"].uncategorised == {"fax": 1}
    ana = session.scalars(select(Contact).where(Contact.external_id == "p1")).one()
    assert ana.alternate_emails == "ana.work@acme.example"  # kept, not dropped
    assert session.scalars(select(Contact).where(Contact.external_id == "p3")).one().email is None
    lead = session.scalars(select(Lead).where(Lead.external_id == "lead_1")).one()
    assert lead.contact_id == ana.id and lead.owner_id is not None  # a north rep
    assert lead.created_at == datetime(2026, 3, 1, 14, 0)  # New York wall time → UTC
    deals = {d.external_id: d for d in session.scalars(select(Deal))}
    assert deals["o2"].stage == "demo" and deals["o3"].outcome == "won"
    assert deals["o1"].outcome is None and deals["o1"].pipeline == "default"
    categories = {a.external_id: a.category for a in session.scalars(select(Activity))}
    assert categories == {"t1": "event", "t2": "content", "t3": "other"}
    stamps = {a.external_id: a.occurred_at for a in session.scalars(select(Activity))}
    assert stamps["t1"] == datetime(2026, 3, 2, 10, 0)  # an explicit offset wins over the zone
    tickets = {t.external_id: t for t in session.scalars(select(Ticket))}
    assert {k: t.priority for k, t in tickets.items()} == {"k1": "P0", "k2": "P3"}
    notes = {m.external_id: m for m in session.scalars(select(Message))}
    assert (notes["m1"].contact_id, notes["m1"].deal_id) == (ana.id, deals["o1"].id)
    assert notes["m2"].ticket_id == tickets["k1"].id and notes["m2"].contact_id == ana.id
    assert [(m.channel, m.direction, m.language, m.intent) for m in notes.values()] == [
        ("wechat", "inbound", "zh", "quote_request"),
        ("email", "inbound", "en", "after_sales_support"),
        ("call_note", "outbound", "en", None),
    ]
    assert notes["m1"].sent_at == notes["m1"].created_at == datetime(2026, 3, 5, 15, 0)
    assert notes["m2"].text == "It crashed, again."


def test_reimport_changes_nothing_and_a_new_stage_writes_history(session, tmp_path):
    mapping = _write(tmp_path)
    import_directory(session, mapping, tmp_path, now=NOW)
    session.commit()
    before = _rows(session)
    again = import_directory(session, mapping, tmp_path, now=NOW)
    session.commit()
    assert _rows(session) == before
    assert all(r.inserted == 0 and r.updated == 0 for r in again)

    (tmp_path / "opps.csv").write_text(FILES["opps.csv"].replace("o1,acct_000001,sql", "o1,acct_000001,proposal"))  # fmt: skip
    moved = {r.entity: r for r in import_directory(session, mapping, tmp_path, now=NOW)}
    session.commit()
    assert moved["deals"].updated == 1 and moved["deals"].stage_changes == 1
    deal = session.scalars(select(Deal).where(Deal.external_id == "o1")).one()
    stages = session.scalars(
        select(DealStageHistory.stage)
        .where(DealStageHistory.deal_id == deal.id)
        .order_by(DealStageHistory.id)  # fmt: skip
    ).all()
    assert stages == ["sql", "proposal"] and deal.stage_entered_at == NOW


@pytest.mark.parametrize(
    ("file", "edit", "expected"),
    [
        ("opps.csv", ("o2,acct_000002,Demo booked", "o2,acct_000002,closing"),
         "opps.csv, line 3, column 'phase' (entities.deals.values.stage): unknown stage 'closing'"),
        ("prospects.csv", ("lead_2,p3", "lead_2,p9"),
         "prospects.csv, line 3, column 'pid' (entities.leads.columns.contact_id): no contacts row with id 'p9'"),
        ("companies.csv", ("acct_000002,Blue", "acct_000001,Blue"),
         "companies.csv, line 3, column 'cid' (entities.accounts.columns.external_id): duplicate id 'acct_000001' (first on line 2)"),
        ("touches.csv", ("2026-03-04", "yesterday"),
         "touches.csv, line 4, column 'at' (entities.activities.columns.occurred_at): not a timestamp"),
        ("reps.csv", ("r3,Cy,south,r1", "r3,Cy,south,r7"),
         "reps.csv, line 4, column 'boss' (entities.users.columns.manager_id): no users row with id 'r7'"),
        ("notes.csv", ("Phone call,out", "Fax,out"),
         "notes.csv, line 4, column 'medium' (entities.messages.values.channel): unknown channel 'Fax'; a channel is one of email, chat, wechat"),
        ("notes.csv", (",zh,", ",fr,"),
         "notes.csv, line 2, column 'lang' (entities.messages.columns.language): unknown language 'fr'"),
        ("notes.csv", ("m2,p1,,k1", "m2,p1,,k9"),
         "notes.csv, line 3, column 'case' (entities.messages.columns.ticket_id): no tickets row with id 'k9'"),
        ("notes.csv", ('"It crashed, again."', '""'),
         "notes.csv, line 3, column 'body' (entities.messages.columns.text): text is required"),
    ],
)  # fmt: skip
def test_a_bad_row_anywhere_names_it_and_writes_nothing(session, tmp_path, file, edit, expected):
    files = {**FILES, file: FILES[file].replace(*edit)}
    mapping = _write(tmp_path, files)
    before = _rows(session)
    with pytest.raises(UserError) as err:
        import_directory(session, mapping, tmp_path, now=NOW)
    session.rollback()
    assert expected in str(err.value)
    assert _rows(session) == before  # the files before the bad one are rolled back too


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("name: tiny", "name: tiny\ncolour: red"), "tiny.yaml: colour: Extra inputs are not permitted"),
        (("won: [won]", "won: [gold]"), "won/lost stage(s) not among the stages: gold"),
        (("event: [webinar]", "events: [webinar]"), "unknown activity category 'events'"),
        (("timezone: America/New_York", "timezone: Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (("  activities:", "  opportunities:"), "unknown entity 'opportunities'"),
        (("columns: {external_id: oid,", "columns: {external_ref: oid,"), "unknown field(s) 'external_ref' for deals"),
        (("external_id: tid,", "external_id: touch_id,"), "line 1 (header) (entities.activities.columns.external_id): no column 'touch_id'"),
    ],
)  # fmt: skip
def test_a_bad_mapping_is_a_clear_error_and_writes_nothing(session, tmp_path, edit, expected):
    before = _rows(session)
    with pytest.raises(UserError) as err:
        import_directory(session, _write(tmp_path, mapping=MAPPING.replace(*edit)), tmp_path, now=NOW)  # fmt: skip
    session.rollback()
    assert expected in str(err.value)
    assert _rows(session) == before


def test_presets_load_and_name_their_source():
    for name in ("demo", "hubspot", "salesforce"):
        mapping = load_mapping(name)
        assert mapping.name == name and mapping.source
    assert load_mapping("salesforce").vocabulary.pipeline.won == ["closed_won"]
    with pytest.raises(UserError, match="no such mapping file"):
        load_mapping("pipedrive")
