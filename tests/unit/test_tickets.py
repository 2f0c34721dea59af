"""Ticket workflow rules: priorities from a source CRM's words, escalation after 24 h open,
a survey once closed, each once per ticket."""

from datetime import datetime

import pandas as pd

from crm_predict.core import tickets as T

NOW = datetime(2025, 6, 30, 12)


def test_priorities_map_from_the_source_vocabulary():
    values = pd.Series(["Urgent", "high", 2, "3.0", "P1", None, "whatever", "紧急"])
    assert T.ticket_priority(values).tolist() == ["P0", "P1", "P2", "P3", "P1", "P2", "P2", "P0"]
    mine = T.TicketRules(priority_values={"P0": ("sev1",)}, default_priority="P3")
    assert T.ticket_priority(pd.Series(["SEV1", "high"]), mine).tolist() == ["P0", "P3"]


def _tickets():
    return pd.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "contact_id": [10, 11, 12, 13, 14, None],
            "opened_at": pd.to_datetime(
                ["2025-06-28 09:00", "2025-06-30 08:00", "2025-06-20", "2025-06-01", "2025-06-29", "2025-06-01"],
                format="ISO8601",
            ),
            "closed_at": pd.to_datetime([None, None, "2025-06-29", "2025-06-02", "2025-07-01", None], format="ISO8601"),
            "priority": ["urgent", "low", "high", "low", "2", "high"],
            "owner_id": [7, 7, 8, 8, 9, 9],
            "manager_id": [70, 70, None, 80, 90, 90],
            "subject": ["Login broken", None, "Invoice", "Old", "Closed later", "No contact"],
        }
    )  # fmt: skip


def test_open_tickets_escalate_to_the_manager_and_closed_ones_get_a_survey():
    tasks = {(t.type, t.entity_id): t for t in T.ticket_tasks(_tickets(), NOW)}

    assert sorted(tasks) == [(T.TASK_SURVEY, 12), (T.TASK_ESCALATION, 10), (T.TASK_ESCALATION, 14)]
    escalation = tasks[(T.TASK_ESCALATION, 10)]
    assert escalation.owner_id == 70 and escalation.escalation_level == 1
    assert escalation.due_at == datetime(2025, 6, 29, 13)  # opened + 24 h + 4 h SLA
    assert escalation.reason == "P0 ticket 1 (Login broken) unresolved after 24 h"
    survey = tasks[(T.TASK_SURVEY, 12)]
    assert survey.owner_id == 8 and survey.due_at == datetime(2025, 7, 1)
    assert "closed 2025-06-29" in survey.reason
    # Ticket 2 is 4 h old, ticket 4 closed too long ago, ticket 5 closes after `now`, 6 has no contact.
    keys = [t.dedup_key for t in T.ticket_tasks(_tickets(), NOW)]
    assert keys == [t.dedup_key for t in T.ticket_tasks(_tickets(), NOW)] and len(set(keys)) == 3


def test_the_limit_comes_from_the_rules():
    later = T.TicketRules(escalate_after_hours=72)
    assert [t.type for t in T.ticket_tasks(_tickets(), NOW, later)] == [T.TASK_SURVEY]
