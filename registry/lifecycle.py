"""Aliases over a model's life: new version → ``challenger``, promotion → ``champion``, rollback.

Only aliases are used (registry stages are deprecated). Every promotion records on the promoted
version the champion it replaced (tag ``previous_champion``) plus who/when/why, and appends the
event to the registered model's tag ``champion_history`` (JSON list), so ``rollback`` is one call.

"""

from __future__ import annotations

import getpass
import json
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from crm_predict.registry.evaluation import (
    MODEL_CARD_ARTIFACT,
    get_version,
    has_artifact,
    is_classifier,
)

from crm_predict.core.errors import UserError
from crm_predict.core.tracking import CHALLENGER, CHAMPION, version_for_alias

if TYPE_CHECKING:
    from crm_predict.registry.gates import GateConfig, GateReport
    from mlflow import MlflowClient

# Model-version tag naming the champion a promotion replaced (``NO_PREVIOUS`` for the first).
TAG_PREVIOUS_CHAMPION, NO_PREVIOUS = "previous_champion", "none"
# Registered-model tag: the champion's history, newest last, capped at HISTORY_LIMIT events.
TAG_HISTORY, HISTORY_LIMIT = "champion_history", 50


class PromotionBlocked(UserError):
    """A gate failed and the promotion was not forced."""

    def __init__(self, report: GateReport) -> None:
        super().__init__(
            report.failure_message() + " — pass --force --reason TEXT to override (recorded)"
        )
        self.report = report


@dataclass(frozen=True)
class ChampionEvent:
    """One move of ``champion``: a promotion or a rollback."""

    action: str
    name: str
    version: str
    previous: str | None
    by: str
    at: str
    reason: str = ""
    forced_gates: tuple[str, ...] = ()


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, e.g. in a bare container
        return os.environ.get("USER", "unknown")


def utc_now() -> datetime:
    """Naive UTC, as everywhere in the project."""
    return datetime.now(UTC).replace(tzinfo=None)


def on_new_version(client: MlflowClient, name: str, version: str | int) -> None:
    """Make ``version`` the ``challenger`` (the previous challenger loses it); training does so
    for every version it registers."""
    get_version(client, name, version)  # clear error for an unknown version
    client.set_registered_model_alias(name, CHALLENGER, str(version))


def history(client: MlflowClient, name: str) -> list[dict]:
    """Every recorded move of ``champion`` for ``name``, oldest first."""
    raw = client.get_registered_model(name).tags.get(TAG_HISTORY)
    return json.loads(raw) if raw else []


def _stamp(by: str | None, reason: str | None) -> dict[str, str]:
    """Who (the OS user unless ``by``), when and why: recorded with every champion move."""
    return {"by": by or current_user(), "at": utc_now().isoformat(timespec="seconds"),
            "reason": (reason or "").strip()}  # fmt: skip


def _record(client: MlflowClient, event: ChampionEvent) -> None:
    events = (history(client, event.name) + [asdict(event)])[-HISTORY_LIMIT:]
    client.set_registered_model_tag(event.name, TAG_HISTORY, json.dumps(events))


def promote(
    client: MlflowClient,
    name: str,
    version: str | int,
    config: GateConfig,
    *,
    force: bool = False,
    reason: str | None = None,
    by: str | None = None,
) -> tuple[ChampionEvent, GateReport]:
    """Point ``champion`` at ``version`` if every gate passes (or ``force`` with a reason)."""
    from crm_predict.registry.gates import check_gates

    version = str(version)
    if force and not (reason and reason.strip()):
        raise UserError("--force needs --reason TEXT: the override is recorded with its reason")
    previous = version_for_alias(client, name, CHAMPION)
    get_version(client, name, version)
    if previous == version:
        raise UserError(f"{name} v{version} is already the champion")
    report = check_gates(client, name, version, config)
    if not report.passed and not force:
        raise PromotionBlocked(report)

    failed = tuple(r.name for r in report.failed)
    event = ChampionEvent(
        "promote", name, version, previous, **_stamp(by, reason), forced_gates=failed
    )
    tags = {
        TAG_PREVIOUS_CHAMPION: previous or NO_PREVIOUS,
        "promoted_by": event.by,
        "promoted_at": event.at,
        "promotion_reason": event.reason,
        "promotion_forced": str(bool(event.forced_gates)).lower(),
        "promotion_forced_gates": ",".join(event.forced_gates),
        # judged N/A: the gate's input is absent
        "promotion_not_applicable_gates": ",".join(r.name for r in report.not_applicable),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHAMPION, version)
    if version_for_alias(client, name, CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    _record(client, event)
    _refresh_card(client, name, version, config)
    return event, report


def rollback(
    client: MlflowClient, name: str, *, reason: str | None = None, by: str | None = None
) -> ChampionEvent:
    """Point ``champion`` back at the version it replaced (no gates: this is the emergency exit)."""
    current = version_for_alias(client, name, CHAMPION)
    if current is None:
        raise UserError(f"{name} has no champion to roll back")
    previous = get_version(client, name, current).version_tags.get(TAG_PREVIOUS_CHAMPION)
    if not previous or previous == NO_PREVIOUS:
        raise UserError(f"{name} v{current} has no recorded previous champion to roll back to")
    get_version(client, name, previous)
    event = ChampionEvent("rollback", name, previous, current, **_stamp(by, reason))
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_model_version_tag(name, current, "rolled_back_by", event.by)
    client.set_model_version_tag(name, current, "rolled_back_at", event.at)
    _record(client, event)
    return event


def _refresh_card(client: MlflowClient, name: str, version: str, config: GateConfig) -> None:
    """Re-render an existing model card so it names who promoted the version and when."""
    from crm_predict.registry.card import write_model_card

    info = get_version(client, name, version)
    if has_artifact(client, info.run_id, MODEL_CARD_ARTIFACT):
        write_model_card(client, name, version, config)


# --- Global fallback -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    """Which registered model serves a request, and why (callers log it)."""

    name: str
    version: str
    alias: str
    segment: str | None
    fallback: bool
    reason: str


def segment_model_name(name: str, segment: str) -> str:
    return f"{name}__{segment}"


def resolve_model(
    client: MlflowClient,
    name: str,
    segment: str | None = None,
    *,
    alias: str = CHAMPION,
    min_class_count: int = 40,
) -> ModelChoice:
    """The segment/tenant model ``{name}__{segment}`` when it exists, holds ``alias`` and was
    trained on enough data (classifiers: ≥ ``min_class_count`` positives and negatives, as
    logged); otherwise the global model ``name``."""
    reason = "no segment requested"
    if segment:
        seg_name = segment_model_name(name, segment)
        try:
            seg_version = version_for_alias(client, seg_name, alias)
        except UserError:
            seg_version, reason = None, f"segment model {seg_name!r} is not registered"
        else:
            reason = f"segment model {seg_name!r} has no {alias!r} alias"
        if seg_version is not None:
            counts = get_version(client, seg_name, seg_version).train_counts()
            if is_classifier(name) and counts is None:
                reason = f"segment model {seg_name!r} v{seg_version} logged no training counts"
            elif is_classifier(name) and min(counts) < min_class_count:
                reason = (
                    f"segment model {seg_name!r} v{seg_version} trained on {counts[0]} positives"
                    f" / {counts[1]} negatives (< {min_class_count})"
                )
            else:
                return ModelChoice(seg_name, seg_version, alias, segment, False, "segment model")
    version = version_for_alias(client, name, alias)
    if version is None:
        raise UserError(f"{name} has no {alias!r} alias: promote a version first")
    return ModelChoice(name, version, alias, segment, bool(segment), reason)
