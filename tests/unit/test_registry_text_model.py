"""The registry reads the text model through its spec like the tabular ones: the card shows its
purpose and metric rows, and a second version is gated against the champion on its key metrics."""

from datetime import datetime

from crm_predict.crm_store.demo_messages import generate_messages
from crm_predict.registry import card, gates
from crm_predict.registry.evaluation import key_metrics
from crm_predict.training import message_intent as mi


def test_a_second_text_version_not_worse_passes_and_its_card_shows_purpose_and_metrics(
    mlflow_client,
):
    data = mi.prepare(generate_messages(800, 3, datetime(2025, 1, 1), datetime(2025, 7, 1)))
    first = mi.train(mlflow_client, data, n_trials=1, lexicons=False)
    mlflow_client.set_registered_model_alias("message_intent", "champion", first.version)
    second = mi.train(mlflow_client, data, n_trials=1, seed=1, lexicons=False)

    markdown = card.write_model_card(mlflow_client, "message_intent", second.version)
    report = gates.check_gates(mlflow_client, "message_intent", second.version, gates.GateConfig())

    assert mi.MODEL.purpose in markdown and mi.MODEL.known_limits in markdown
    assert "| intent_macro_f1_en |" in markdown and "## Text model" in markdown
    not_worse = next(r for r in report.results if r.name == "not_worse_than_champion")
    assert not_worse.passed and "intent_macro_f1_en" in not_worse.detail, not_worse.detail
    assert all(r.passed or not r.applicable for r in report.results), report.failure_message()


def test_a_text_version_worse_than_the_champion_fails_the_gate():
    directions = key_metrics("message_intent")
    champion = dict.fromkeys(directions, 0.9)
    worse = {**champion, "intent_macro_f1_en": 0.5}

    result = gates.gate_not_worse_logged(worse, champion, directions, gates.GateConfig())

    assert set(directions) == {name for name, _ in mi.MODEL.key_metrics}
    assert not result.passed and "intent_macro_f1_en 0.500" in result.detail
