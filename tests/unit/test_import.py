"""CSV import promises: all or nothing with a precise error, duplicate contacts merged, re-import
idempotent; and the CLI commands exit 2 with a message (no traceback) on bad input."""

from datetime import datetime

import pytest
from crm_predict.crm_store.importer import import_csv, normalise_phone
from crm_predict.crm_store.models import Account, Contact, Deal, Lead, Message, Order, Ticket, User
from sqlalchemy import func, select

from crm_predict.core.errors import UserError

NOW = datetime(2026, 7, 1, 9, 0)


def _csv(tmp_path, name: str, text: str, encoding: str = "utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def store(session):
    """Two owners and two accounts to refer to."""
    session.add_all([User(id=1, name="Ana", region="north"), User(id=2, name="Ben", region="east")])
    session.flush()
    session.add_all(
        [
            Account(id=10, name="Acme", owner_id=1, created_at=NOW, updated_at=NOW),
            Account(id=11, name="Blue", owner_id=2, created_at=NOW, updated_at=NOW),
        ]
    )
    session.commit()
    return session


def test_import_is_all_or_nothing(store, tmp_path):
    path = _csv(
        tmp_path,
        "leads.csv",
        "id,account_id,source,created_at\n"
        "1,10,web_form,2026-01-05\n"
        "2,11,referral,2026-01-06 10:30\n"
        "3,10,event,next tuesday\n",
    )
    with pytest.raises(UserError) as err:
        import_csv(store, "leads", path, now=NOW)
    store.rollback()
    assert str(err.value).startswith(
        f"{path}, line 4, column 'created_at' (entities.leads.columns.created_at): "
    )
    assert "next tuesday" in str(err.value)
    assert _count(store, Lead) == 0


@pytest.mark.parametrize(
    ("entity", "content", "encoding", "expected"),
    [
        ("accounts", "id,name\n1,Caf\u00e9\n", "latin-1", "line 2: not UTF-8 (byte 0xe9)"),
        ("accounts", "", "utf-8", "the file is empty"),
        ("accounts", "id,name\n", "utf-8", "header but no data rows"),
        ("accounts", "id,industry\n1,software\n", "utf-8", "does not fill the required field 'name'"),
        ("accounts", "id,name,colour\n1,A,red\n", "utf-8", "unknown column(s): 'colour'"),
        ("accounts", "id,name\n1,A\n2,B\n1,C\n", "utf-8", "line 4, column 'id' (entities.accounts.columns.external_id): duplicate id '1' (first on line 2)"),
        ("accounts", "id,name\n1,A,extra\n", "utf-8", "line 2: 3 values but the header has 2 columns"),
        ("accounts", "id,name\n1," + "x" * 10_001 + "\n", "utf-8", "line 2, column 'name' (entities.accounts.columns.name): value longer than 10,000"),
        ("accounts", "id,name\n1," + "x" * 301 + "\n", "utf-8", "line 2, column 'name' (entities.accounts.columns.name): longer than 300 characters"),
        ("accounts", "id,name,owner_id\n1,A,99\n", "utf-8", "line 2, column 'owner_id' (entities.accounts.columns.owner_id): no users row with id '99'"),
        ("deals", "id,stage,created_at,outcome\n1,proposal,2026-01-01,won\n", "utf-8", "line 2 (entities.deals.columns.closed_at): outcome and closed_at go together"),
        ("orders", "id,contact_id,ordered_at,amount\n1,5,2026-01-01,-3\n", "utf-8", "line 2, column 'amount' (entities.orders.columns.amount): must be at least 0"),
        ("contacts", "first_name,email\nAna,not-an-email\n", "utf-8", "line 2, column 'email' (entities.contacts.columns.email): not an email address"),
        ("tickets", 'id,opened_at,subject\n1,2026-01-01,"two\nlines"\n2,someday,x\n', "utf-8", "line 4, column 'opened_at'"),
        ("opportunities", "id\n1\n", "utf-8", "unknown entity 'opportunities'"),
        ("messages", "id,channel,direction,sent_at,text\n1,fax,inbound,2026-01-01,hi\n", "utf-8", "line 2, column 'channel' (entities.messages.columns.channel): unknown channel 'fax'; a channel is one of email, chat, wechat, call_note, ticket"),
        ("messages", "id,channel,direction,sent_at,text,sentiment\n1,chat,inbound,2026-01-01,hi,angry\n", "utf-8", "column 'sentiment' (entities.messages.columns.sentiment): unknown sentiment 'angry'"),
        ("messages", "id,channel,direction,sent_at\n1,email,inbound,2026-01-01\n", "utf-8", "does not fill the required field 'text'"),
        ("messages", "id,channel,direction,sent_at,text\n1,email,,2026-01-01,hi\n", "utf-8", "line 2, column 'direction' (entities.messages.columns.direction): direction is required"),
        ("messages", "id,contact_id,channel,direction,sent_at,text\n1,77,email,inbound,2026-01-01,hi\n", "utf-8", "column 'contact_id' (entities.messages.columns.contact_id): no contacts row with id '77'"),
        ("messages", "id,channel,direction,sent_at,text\n1,email,inbound,2026-01-01," + "x" * 10_001 + "\n", "utf-8", "line 2, column 'text' (entities.messages.columns.text): value longer than 10,000"),
    ],
)  # fmt: skip
def test_bad_file_names_file_line_and_field_and_writes_nothing(
    store, tmp_path, entity, content, encoding, expected
):
    path = _csv(tmp_path, f"{entity}.csv", content, encoding)
    before = {m: _count(store, m) for m in (Account, Contact, Deal, Order, Message)}
    with pytest.raises(UserError) as err:
        import_csv(store, entity, path, now=NOW)
    store.rollback()
    assert expected in str(err.value)
    assert entity == "opportunities" or str(path) in str(err.value)
    assert {m: _count(store, m) for m in before} == before


def test_messages_link_to_contacts_deals_and_tickets_by_their_source_ids(store, tmp_path):
    files = {
        "contacts": "id,email\nc1,a@x.example\n",
        "deals": "id,contact_id,stage,created_at\nd1,c1,proposal,2026-01-02\n",
        "tickets": "id,contact_id,opened_at,priority\nt1,c1,2026-01-03,Urgent\nt2,c1,2026-01-04,\n"
        "t3,c1,2026-01-05,2.0\n",
        "messages": "id,contact_id,deal_id,ticket_id,channel,direction,sent_at,language,text,intent\n"
        "m1,c1,d1,,WeChat,Inbound,2026-01-02 10:00,zh,报价多少钱？,quote_request\n"
        "m2,c1,,t1,ticket,inbound,2026-01-03 08:00,en,It is broken,\n",
    }
    for entity, text in files.items():
        import_csv(store, entity, _csv(tmp_path, f"{entity}.csv", text), now=NOW)
    store.commit()
    contact = store.scalars(select(Contact.id).where(Contact.external_id == "c1")).one()
    tickets = {t.external_id: t for t in store.scalars(select(Ticket))}
    assert {k: t.priority for k, t in tickets.items()} == {"t1": "P0", "t2": None, "t3": "P2"}
    first, second = store.scalars(select(Message).order_by(Message.sent_at)).all()
    deal = store.scalars(select(Deal.id).where(Deal.external_id == "d1")).one()
    assert (first.contact_id, first.deal_id, first.channel, first.direction) == (
        contact, deal, "wechat", "inbound",
    )  # fmt: skip
    assert (first.intent, first.created_at) == ("quote_request", datetime(2026, 1, 2, 10))
    assert (second.ticket_id, second.intent, second.language) == (tickets["t1"].id, None, "en")
    again = import_csv(store, "messages", tmp_path / "messages.csv", now=NOW)
    assert (again.inserted, again.updated) == (0, 0)


def test_duplicate_contacts_are_merged_not_doubled(store, tmp_path):
    store.add(
        Contact(
            id=100, email="dana@blue.example", phone=None, first_name="Dana",
            created_at=NOW, updated_at=NOW,
        )
    )  # fmt: skip
    store.commit()
    path = _csv(
        tmp_path,
        "contacts.csv",
        "first_name,last_name,email,phone,region,account_id\n"
        "Ana,Abe,ana@acme.example,+44 20 7946 0958,,10\n"
        "Ana,,  ANA@Acme.example ,,north,\n"  # same email, other case: fills region
        "A.,Abe,,0044 20 7946 0958,south,\n"  # same phone in another format: region kept
        "Dana,Diaz,DANA@blue.example,555-0100,east,11\n"  # matches the stored contact
        "Eli,Ito,eli@ito.example,,,\n",
    )
    result = import_csv(store, "contacts", path, now=NOW)
    store.commit()
    assert (result.rows, result.inserted, result.updated, result.merged) == (5, 2, 1, 3)
    assert _count(store, Contact) == 3
    ana = store.scalars(select(Contact).where(Contact.email == "ana@acme.example")).one()
    assert (ana.region, ana.account_id, ana.last_name) == ("north", 10, "Abe")
    assert normalise_phone(ana.phone) == normalise_phone("0044 20 7946 0958")
    dana = store.get(Contact, 100)
    assert (dana.first_name, dana.last_name, dana.region, dana.phone) == (
        "Dana", "Diaz", "east", "555-0100",
    )  # fmt: skip
    assert dana.updated_at == NOW


def test_reimport_is_idempotent(store, tmp_path):
    contacts = _csv(
        tmp_path, "contacts.csv", "id,email,first_name\n500,a@x.example,A\n501,b@x.example,B\n"
    )
    orders = _csv(
        tmp_path,
        "orders.csv",
        "id,contact_id,ordered_at,amount,channel\n"
        "1,500,2026-02-01T10:00:00+02:00,10.5,web\n2,501,2026-02-02,20,app\n",
    )
    first = [import_csv(store, "contacts", contacts, now=NOW), import_csv(store, "orders", orders, now=NOW)]  # fmt: skip
    store.commit()
    second = [import_csv(store, "contacts", contacts, now=NOW), import_csv(store, "orders", orders, now=NOW)]  # fmt: skip
    store.commit()
    assert [(r.inserted, r.updated) for r in first] == [(2, 0), (2, 0)]
    assert [(r.inserted, r.updated) for r in second] == [(0, 0), (0, 0)]  # nothing changed
    assert (_count(store, Contact), _count(store, Order)) == (2, 2)
    order = store.scalars(select(Order).where(Order.external_id == "1")).one()
    assert (
        order.contact_id
        == store.scalars(select(Contact.id).where(Contact.external_id == "500")).one()
    )
    assert order.ordered_at == datetime(2026, 2, 1, 8, 0) and order.items == 1  # UTC, default


def test_partial_file_updates_only_its_columns(store, tmp_path):
    full = _csv(tmp_path, "deals.csv", "id,name,amount,stage,created_at\n7,Big,1000,proposal,2026-03-01\n")  # fmt: skip
    import_csv(store, "deals", full, now=NOW)
    store.commit()
    partial = _csv(tmp_path, "deals2.csv", "id,stage,created_at\n7,negotiation,2026-03-01\n")
    assert import_csv(store, "deals", partial, now=NOW).updated == 1
    store.commit()
    deal = store.scalars(select(Deal).where(Deal.external_id == "7")).one()
    store.refresh(deal)
    assert (deal.name, deal.amount, deal.stage) == ("Big", 1000.0, "negotiation")


def test_new_rows_after_an_import_get_fresh_ids(store, tmp_path):
    import_csv(store, "contacts", _csv(tmp_path, "c.csv", "id,email\n900,z@z.example\n"), now=NOW)
    store.commit()
    store.add(Contact(email="new@z.example", created_at=NOW, updated_at=NOW))
    store.commit()
    imported = store.scalars(select(Contact).where(Contact.external_id == "900")).one()
    assert store.scalar(select(func.max(Contact.id))) == imported.id + 1


# --- CLI -------------------------------------------------------------------------------------


def test_cli_demo_data_refuses_a_full_store_without_replace(cli):
    first = cli("demo-data", "--customers", "40", "--seed", "2")
    assert first.exit_code == 0, first.output
    assert "orders" in first.output and "contacts" in first.output
    again = cli("demo-data", "--customers", "40")
    assert again.exit_code == 2
    assert "not empty" in again.output and "--replace" in again.output
    assert "Traceback" not in again.output
    replaced = cli("demo-data", "--customers", "40", "--replace", "--as-of", "2025-12-31")
    assert replaced.exit_code == 0, replaced.output


def test_cli_demo_data_rejects_a_bad_date(cli):
    result = cli("demo-data", "--customers", "40", "--as-of", "30.06.2026")
    assert result.exit_code == 2 and "as-of" in result.output


def test_cli_import_reports_counts_and_bad_rows(cli, tmp_path):
    good = _csv(tmp_path, "contacts.csv", "email,first_name\na@x.example,A\nA@X.example,\n")
    result = cli("import", "contacts", str(good))
    assert result.exit_code == 0, result.output
    assert "2 rows read, 1 inserted" in result.output and "1 merged" in result.output
    bad = _csv(tmp_path, "orders.csv", "id,contact_id,ordered_at,amount\n1,1,2026-01-01,ten\n")
    result = cli("import", "orders", str(bad))
    assert result.exit_code == 2
    assert "line 2, column 'amount'" in result.output and "Traceback" not in result.output
    missing = cli("import", "orders", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 2 and "no such file" in missing.output
