"""The rules file's ``messages`` and ``tickets`` sections: shipped defaults equal the built-in
ones, a file changes what the pure rules do, and a bad key or value is named."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from crm_predict.core import messages as M
from crm_predict.core import tickets as T
from crm_predict.core.errors import UserError
from crm_predict.core.rules import DEFAULT_RULES_FILE, RULES, IntentPriority, load_rules

NOW = datetime(2026, 6, 30, 12)


def _rules(tmp_path, text: str):
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return load_rules(path)


def test_sections_default_to_the_design_numbers_and_the_shipped_file_says_the_same():
    assert load_rules(DEFAULT_RULES_FILE).messages == RULES.messages == M.MessageRules()
    assert load_rules(DEFAULT_RULES_FILE).tickets == RULES.tickets == T.TicketRules()
    assert RULES.messages.complaint_share == 0.3 and RULES.tickets.escalate_after_hours == 24
    # One weight per intent the model reads, one priority list per P0–P3.
    assert tuple(IntentPriority.model_fields) == M.INTENTS
    assert tuple(RULES.tickets.priority_values) == T.PRIORITIES


def test_a_file_changes_topics_competitors_weights_and_ticket_words(tmp_path):
    rules = _rules(
        tmp_path,
        "messages:\n"
        "  complaint_share: 0.5\n"
        "  intent_priority: {quote_request: 0.2}\n"
        "  competitors: [Acme CRM]\n"
        "  topics: {contract: [renewal, 续约]}\n"
        "tickets:\n"
        "  priority_values: {P0: [Sev1, 1]}\n"
        "  default_priority: P3\n"
        "  escalate_after_hours: 8\n",
    )
    messages, tickets = rules.messages, rules.tickets
    assert messages.complaint_share == 0.5
    assert messages.intent_priority.quote_request == 0.2
    assert messages.intent_priority.after_sales_support == 0.8  # a key left out keeps its default
    assert M.competitor_named("we also looked at ACME crm", messages) == "Acme CRM"
    assert M.competitor_named("we also looked at HubSpot", messages) is None
    assert M.topic_keywords("Renewal price?", messages.topics) == ["contract"]
    assert M.need_priority(["quote_request"], [1.0], ["satisfied"], messages).tolist() == [20]
    assert tickets.priority_values == {"P0": ("sev1", "1")}  # lower case; YAML's 1 is text
    assert T.ticket_priority(pd.Series(["SEV1", 1, "high"]), tickets).tolist() == ["P0", "P0", "P3"]
    ticket = pd.DataFrame(
        {
            "id": [5], "contact_id": [10], "opened_at": [pd.Timestamp("2026-06-30 02:00")],
            "closed_at": [pd.NaT], "priority": ["sev1"], "owner_id": [7], "manager_id": [70],
        }
    )  # fmt: skip
    assert [t.owner_id for t in T.ticket_tasks(ticket, NOW, tickets)] == [70]  # 10 h > 8 h
    assert T.ticket_tasks(ticket, NOW, RULES.tickets) == []  # 10 h < 24 h


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "messages:\n  complaint_treshold: 0.4\n",
            "messages.complaint_treshold: unknown key; allowed: complaint_window_days",
        ),
        (
            "messages:\n  intent_priority: {pricing: 1}\n",
            "messages.intent_priority.pricing: unknown key; allowed: technical_consultation",
        ),
        ("messages:\n  complaint_share: 30\n", "messages.complaint_share: Input should be less"),
        ("messages:\n  complaint_window_days: 0\n", "messages.complaint_window_days: Input should be greater"),
        ("messages:\n  competitors: ['']\n", "messages.competitors.0: String should have at least 1"),
        ("messages:\n  topics: {price: []}\n", "messages.topics: topic 'price' has no words"),
        ("tickets:\n  default_priority: P5\n", "tickets.default_priority: Input should be 'P0'"),
        ("tickets:\n  priority_values: {P0: [high], P1: [High]}\n", "'high' is listed under P0 and P1"),
        ("tickets:\n  escalate_after_hours: soon\n", "tickets.escalate_after_hours: Input should be a valid integer"),
        ("tickets:\n  survey_after: 3\n", "tickets.survey_after: unknown key; allowed: priority_values"),
    ],
)  # fmt: skip
def test_a_bad_messages_or_tickets_key_is_an_error_naming_it(tmp_path, text, message):
    with pytest.raises(UserError) as caught:
        _rules(tmp_path, text)
    assert message in str(caught.value)
