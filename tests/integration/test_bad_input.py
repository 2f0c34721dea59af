"""Bad input everywhere, beyond tests/unit/test_import.py's catalogue: values that pass a naive
parse but not the database (ids past BIGINT, counts past INTEGER, infinite amounts), a bad byte deep
in a file, and the real ``crm-predict`` console script in a subprocess on wrong arguments: a clear
message, exit code 2, no traceback, and nothing written (checked on SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from crm_predict.crm_store.importer import import_csv
from crm_predict.crm_store.models import Account, Contact, Deal, Order, User
from sqlalchemy import func, select

from crm_predict.core.errors import UserError

NOW = datetime(2026, 7, 1, 9, 0)
CLI = Path(sys.executable).with_name("crm-predict")


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


@pytest.fixture
def store(session):
    """One owner, one account and one contact to refer to."""
    session.add(User(id=1, name="Ana", region="north"))
    session.flush()
    session.add(Account(id=10, name="Acme", owner_id=1, created_at=NOW, updated_at=NOW))
    session.flush()
    session.add(Contact(id=5, email="c@x.example", created_at=NOW, updated_at=NOW))
    session.commit()
    return session


@pytest.mark.parametrize(
    ("entity", "content", "expected"),
    [
        ("accounts", "id,name\n1,A\n" + "9" * 101 + ",B\n", "line 3, column 'id' (entities.accounts.columns.external_id): longer than 100 characters"),
        ("contacts", "email,points\na@x.example,3000000000\n", "line 2, column 'points' (entities.contacts.columns.points): must be at most 2,147,483,647"),
        ("orders", "id,contact_id,ordered_at,amount\n1,5,2026-01-01,1e400\n", "line 2, column 'amount' (entities.orders.columns.amount): not a finite number"),
        ("orders", "id,contact_id,ordered_at,amount\n1,5,2026-01-01,nan\n", "line 2, column 'amount' (entities.orders.columns.amount): not a finite number"),
        ("orders", "id,contact_id,ordered_at,amount,items\n1,5,2026-01-01,3,4294967296\n", "line 2, column 'items'"),
        ("deals", "id,stage,created_at,close_date_slips\n1,proposal,2026-01-01,-1\n", "line 2, column 'close_date_slips'"),
        ("deals", "id,stage,created_at,amount\n1,proposal,2026-01-01,12;34\n", "line 2, column 'amount' (entities.deals.columns.amount): not a finite number"),
        ("leads", "id,account_id,source,created_at\n1,10,web,2026-02-30\n", "line 2, column 'created_at'"),
    ],
)  # fmt: skip
def test_values_the_database_cannot_hold_are_field_errors_and_write_nothing(
    store, tmp_path, entity, content, expected
):
    path = tmp_path / f"{entity}.csv"
    path.write_text(content)
    before = {m: _count(store, m) for m in (Account, Contact, Deal, Order)}
    with pytest.raises(UserError) as err:
        import_csv(store, entity, path, now=NOW)
    store.rollback()
    assert str(err.value).startswith(f"{path}, "), err.value
    assert expected in str(err.value)
    assert {m: _count(store, m) for m in before} == before


def test_a_latin1_byte_deep_in_a_file_names_its_line_and_writes_nothing(store, tmp_path):
    good = "".join(f"{i},Account {i}\n" for i in range(100, 150))
    path = tmp_path / "accounts.csv"
    path.write_bytes(b"id,name\n" + good.encode() + "200,M\u00fcller GmbH\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"line 52: not UTF-8 \(byte 0xfc\)"):
        import_csv(store, "accounts", path, now=NOW)
    store.rollback()
    assert _count(store, Account) == 1


# --- the real console script ----------------------------------------------------------------------


def _run(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CRM_PREDICT_DATA_DIR": str(data_dir), "NO_COLOR": "1", "COLUMNS": "200"}
    env.pop("CRM_PREDICT_DATABASE_URL", None)
    return subprocess.run(
        [str(CLI), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["no-such-command"], "No such command 'no-such-command'"),
        (["train", "no_such_model"], "unknown model 'no_such_model'"),
        (["import", "accounts", "{tmp}/huge.csv"], "line 2, column 'id'"),
    ],
)
def test_console_script_refuses_bad_arguments_with_exit_2_and_no_traceback(
    tmp_path, args, expected
):
    (tmp_path / "huge.csv").write_text("id,name\n" + "9" * 101 + ",A\n")
    result = _run(tmp_path / "data", *(a.format(tmp=tmp_path) for a in args))
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert expected in " ".join(output.split()), output  # rich may wrap long messages
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--models", "lead_scoring,nope"], "unknown model(s) nope"),
        (["--at", "31.02.2026"], "--at '31.02.2026' is not an ISO date/time"),
        (["--since", "last week"], "--since 'last week' is not an ISO date/time"),
    ],
)
def test_batch_score_refuses_bad_models_and_dates_before_touching_any_store(
    tmp_path, args, expected
):
    from typer.testing import CliRunner

    from crm_predict.cli import app

    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path), "batch", "score", *args])
    # In process the UserError reaches the runner; the console script's main() prints it, exit 2.
    assert isinstance(result.exception, UserError), result.output
    assert expected in str(result.exception)
    assert not list(tmp_path.rglob("*.db"))  # neither the CRM store nor MLflow was created
