"""The ticket workflow's rules: priorities P0–P3 mapped from whatever the source CRM calls them,
an escalation task to the manager when a ticket stays unresolved past its limit, and a
satisfaction-survey task once it is closed; one task per ticket and kind, so reruns add nothing.
The thresholds are the rules file's ``tickets`` section (``TicketRules``, defined with the other
sections in ``crm_predict.core.rules`` and importable from here)."""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from crm_predict.core.rules import TaskSpec, TicketRules

PRIORITIES = ("P0", "P1", "P2", "P3")
TASK_ESCALATION, TASK_SURVEY = "ticket_escalation", "satisfaction_survey"


def ticket_priority(values: pd.Series, rules: TicketRules = TicketRules()) -> pd.Series:
    """P0–P3 for each source value (numbers as text: 1 → P1)."""
    lookup = {v.lower(): p for p, names in rules.priority_values.items() for v in names}
    text = values.astype("string").str.strip().str.lower().str.replace(r"\.0$", "", regex=True)
    return text.map(lookup).fillna(rules.default_priority).astype(object)


def ticket_tasks(tickets: pd.DataFrame, now: datetime, rules: TicketRules = TicketRules()) -> list[TaskSpec]:  # fmt: skip
    """Escalation for tickets open longer than ``escalate_after_hours`` at ``now`` (to the
    contact owner's manager, else the owner); a survey for tickets closed in the last
    ``survey_window_days``. ``tickets``: ``id, contact_id, opened_at, closed_at, priority,
    owner_id, manager_id`` (``subject`` optional)."""
    tasks = []
    limit = pd.Timedelta(hours=rules.escalate_after_hours)
    for t in tickets[tickets["contact_id"].notna()].itertuples(index=False):
        opened = pd.Timestamp(t.opened_at)
        closed = None if pd.isna(t.closed_at) else pd.Timestamp(t.closed_at)
        about = f"ticket {t.id}" + (f" ({t.subject})" if getattr(t, "subject", None) else "")
        priority = ticket_priority(pd.Series([t.priority]), rules).iloc[0]
        owner = None if pd.isna(t.owner_id) else int(t.owner_id)
        manager = None if pd.isna(getattr(t, "manager_id", None)) else int(t.manager_id)
        if (closed is None or closed > now) and now - opened >= limit:
            start = (opened + limit).to_pydatetime()
            tasks.append(TaskSpec(
                TASK_ESCALATION, "contact", int(t.contact_id), manager or owner,
                start + pd.Timedelta(hours=rules.escalation_sla_hours).to_pytimedelta(),
                rules.escalation_sla_hours,
                f"{priority} {about} unresolved after {rules.escalate_after_hours} h",
                escalation_level=1, period=f"ticket:{t.id}",
            ))  # fmt: skip
        elif (
            closed is not None and now - pd.Timedelta(days=rules.survey_window_days) < closed <= now
        ):
            tasks.append(TaskSpec(
                TASK_SURVEY, "contact", int(t.contact_id), owner,
                (closed + pd.Timedelta(hours=rules.survey_sla_hours)).to_pydatetime(),
                rules.survey_sla_hours, f"Satisfaction survey: {about} closed {closed:%Y-%m-%d}",
                period=f"ticket:{t.id}",
            ))  # fmt: skip
    return tasks
