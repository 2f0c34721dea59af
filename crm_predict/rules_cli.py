"""``crm-predict rules check [FILE]`` and ``crm-predict rules show``: the business rules file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from crm_predict.core.errors import UserError, user_errors_exit_2

rules_app = typer.Typer(no_args_is_help=True, help="Business rules file: check, show.")
console = Console()


def check_columns(rules) -> list[str]:
    """Tag rules reading a column their entity's batch row does not have (one message each)."""
    from crm_predict.core.rules import TAG_ENTITIES
    from crm_predict.serving.batch import tag_rule_columns

    errors = []
    for i, rule in enumerate(rules.tags):
        known = tag_rule_columns(TAG_ENTITIES[rule.entity])
        for column in rule.condition.columns:
            if column not in known:
                errors.append(
                    f"tags[{i}].when: unknown column {column!r} for a {rule.entity}; "
                    f"known: {', '.join(known)}"
                )
    return errors


@rules_app.command("check")
@user_errors_exit_2
def check_command(
    ctx: typer.Context,
    file: Path = typer.Argument(
        None, help="Rules YAML to check (default: the one in effect, CRM_PREDICT_RULES_FILE)."
    ),
) -> None:
    """Validate a rules file: keys, types, conditions and the columns tag rules read; exit 2 on
    an error."""
    from crm_predict.core.rules import load_rules

    path = file if file is not None else ctx.obj.rules_path
    if path is None:
        raise UserError("no rules file: CRM_PREDICT_RULES_FILE is unset and <data dir>/rules.yaml does not exist; give FILE")  # fmt: skip
    rules = load_rules(path)
    errors = check_columns(rules)
    if errors:
        raise UserError(f"{Path(path).name}: {'; '.join(errors)}")
    lead, deal, churn, value = rules.lead, rules.deal, rules.churn, rules.value
    assignment, messages, tickets = rules.assignment, rules.messages, rules.tickets
    console.print(f"[green]OK[/] {path}")
    console.print(
        f"lead: MQL at {lead.mql_threshold} points, target industries "
        f"{', '.join(lead.target_industries) or '-'}, regions {', '.join(lead.target_regions) or '-'}\n"
        f"deal: green ≥ {deal.green_at}, yellow ≥ {deal.yellow_at}, idle escalation after "
        f"{deal.idle_escalation_days} days\n"
        f"churn: high ≥ {churn.high_at}, medium ≥ {churn.medium_at}\n"
        f"value: diamond > {value.diamond_above:,.0f}, gold ≥ {value.gold_from:,.0f}\n"
        f"assignment: {len(assignment.default_owner_by_region)} region default owner(s), "
        f"queue {assignment.queue!r}\n"
        f"messages: complaint_tendency above {messages.complaint_share:.0%} complaining over "
        f"{messages.complaint_window_days} days, {len(messages.competitors)} competitor(s), "
        f"topics {', '.join(messages.topics) or '-'}\n"
        f"tickets: escalation after {tickets.escalate_after_hours} h unresolved, survey within "
        f"{tickets.survey_window_days} days of closing, unknown priority {tickets.default_priority}\n"
        f"tags: {len(rules.tags)} rule(s)"
        + "".join(f"\n  {r.name}={r.value} on {r.entity} when {r.when}" for r in rules.tags),
        soft_wrap=True,
        markup=False,
    )


@rules_app.command("show")
@user_errors_exit_2
def show_command(ctx: typer.Context) -> None:
    """Print the rules in effect as YAML and the file they came from."""
    import yaml

    path = ctx.obj.rules_path
    rules = ctx.obj.load_rules()
    source = str(path) if path is not None else "built-in defaults (no rules file)"
    console.print(f"# rules from: {source}", markup=False, soft_wrap=True)
    console.print(
        yaml.safe_dump(rules.as_dict(), sort_keys=False, allow_unicode=True).rstrip(),
        markup=False,
        soft_wrap=True,
        highlight=False,
    )
