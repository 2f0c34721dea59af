"""Intent and sentiment of customer messages (English and Chinese): the demo generator's ground
truth, the text checks, training against its baselines, the registered pyfunc and its reasons."""

from datetime import datetime

import mlflow
import numpy as np
import pandas as pd
import pytest
from crm_predict.crm_store import demo_messages
from crm_predict.crm_store.demo_messages import INTENTS, SENTIMENTS, generate_messages
from crm_predict.training import message_intent as mi

from crm_predict.core import messages
from crm_predict.core.errors import UserError
from crm_predict.core.tracking import CHALLENGER, version_for_alias

START, END = datetime(2025, 1, 1), datetime(2025, 7, 1)


def _messages(n: int = 1500, seed: int = 3) -> pd.DataFrame:
    return generate_messages(n, seed, START, END)


def test_the_generator_is_seeded_bilingual_and_labelled():
    first, again = _messages(200), _messages(200)
    pd.testing.assert_frame_equal(first, again)
    assert set(first["language"]) == {"en", "zh"}
    assert set(first["intent"]) == set(INTENTS) and set(first["sentiment"]) == set(SENTIMENTS)
    assert first["sent_at"].is_monotonic_increasing
    assert [mi.detect_language(t) for t in first["text"]] == first["language"].tolist()


def test_the_generator_writes_as_customers_do_and_labels_as_teams_do():
    """One-liners, emoji, English words in Chinese text, a keyword rule misled by shared
    vocabulary, a few labels another class than the text was written for, weights leaning the
    draws (what the demo CRM ties to outcomes)."""
    frame = _messages(2000)
    text = frame["text"]
    assert (text.str.len() < 25).mean() > 0.08  # one-line chat messages
    assert text.str.contains("[\U0001f300-\U0001faff]").mean() > 0.03  # emoji
    chinese = text[frame["language"] == "zh"]
    assert chinese.str.contains("[A-Za-z]{3,}").mean() > 0.15  # product names, quote, price …
    for language, part in frame.groupby("language"):
        rule = mi.keyword_intent(part["text"], default="technical_consultation")
        assert mi.macro_f1(part["intent"], rule) < 0.75, language

    rng = np.random.default_rng(1)
    skeleton = demo_messages.message_frame(3000, rng, START, END)
    clean = demo_messages.write_messages(skeleton, np.random.default_rng(2), label_noise=0.0)
    noisy = demo_messages.write_messages(skeleton, np.random.default_rng(2))
    assert clean["text"].equals(noisy["text"])  # the same texts, a few labels moved
    flipped = (clean["intent"] != noisy["intent"]).mean()
    assert 0.015 < flipped < 0.05 and 0.015 < (clean["sentiment"] != noisy["sentiment"]).mean() < 0.05  # fmt: skip

    quotes = np.tile([1.0, 4.0, 1.0, 1.0], (3000, 1))
    complaints = np.tile([1.0, 4.0, 1.0], (3000, 1))
    leaning = demo_messages.write_messages(skeleton, np.random.default_rng(2), quotes, complaints)
    assert (leaning["intent"] == "quote_request").mean() > 0.5
    assert (leaning["sentiment"] == "complaining").mean() > (clean["sentiment"] == "complaining").mean() + 0.1  # fmt: skip


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("我们也在和Salesforce谈，你们的CRM平台好在哪里？", "zh"),
        ("Could you send us a quote for 50 licenses of SalesBox?", "en"),
        ("Zhang Min here: the invoice is wrong.", "en"),
        ("Привет, сколько стоит лицензия?", None),
        ("12345 !!!", None),
    ],
)
def test_language_is_told_from_the_script(text, language):
    assert mi.detect_language(text) == language


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("   ", "empty"),
        ("a" * 1_000_000, "at most 20,000"),
        ("quote\x00\x01\x02 please", "control characters"),
        (b"\xff\xfe\x00binary".decode("utf-8", errors="replace") * 5, "control characters"),
        ("Привет, сколько стоит лицензия?", "no language the model reads"),
        (42, "must be a string"),
    ],
    ids=["empty", "1MB", "control", "binary", "russian", "number"],
)
def test_bad_text_is_refused_with_a_reason(text, message):
    with pytest.raises(UserError, match=message):
        mi.check_text(text)


def test_prepare_names_the_bad_row_and_column():
    frame = pd.DataFrame(
        {"body": ["Please share pricing.", "你好"], "label": ["quote_request", " "]}
    )
    with pytest.raises(UserError, match="missing column"):
        mi.prepare(frame, text_col="text")
    with pytest.raises(UserError, match="row 3: no label label"):
        mi.prepare(frame, "body", {"intent": "label", "sentiment": "label"})
    frame["label"] = ["quote_request", "quote_request"]
    frame.loc[1, "body"] = ""
    with pytest.raises(UserError, match="row 3: text is empty"):
        mi.prepare(frame, "body", {"intent": "label", "sentiment": "label"})


def test_keyword_rule_counts_hits_and_falls_back():
    texts = ["What is the price of 20 seats?", "系统报错了，打不开", "hello"]
    assert mi.keyword_intent(texts, default="technical_consultation").tolist() == [
        "quote_request",
        "after_sales_support",
        "technical_consultation",
    ]


def test_topic_keywords_are_configured_lists():
    topics = {"price": ["price", "报价"], "delivery_time": ["deliver", "送到"]}
    assert messages.topic_keywords("When will it be delivered? And the price?", topics) == [
        "price",
        "delivery_time",
    ]
    assert messages.topic_keywords("订单什么时候送到", topics) == ["delivery_time"]


def test_training_beats_both_baselines_per_language_and_registers(mlflow_client):
    data = mi.prepare(_messages())

    result = mi.train(mlflow_client, data, n_trials=1, lexicons=False)

    m = result.metrics
    for language in ("en", "zh"):
        f1 = m[f"intent_macro_f1_{language}"]
        assert f1 >= 0.9, m
        assert f1 >= m[f"intent_macro_f1_keyword_rule_{language}"] + 0.2, m  # a clear margin
        assert f1 >= m[f"intent_macro_f1_majority_{language}"] + 0.3, m
        assert (
            m[f"sentiment_accuracy_{language}"] > m[f"sentiment_accuracy_majority_{language}"] + 0.2
        )
    assert version_for_alias(mlflow_client, "message_intent", CHALLENGER) == result.version

    model = mlflow.pyfunc.load_model(f"models:/message_intent/{result.version}")
    texts = [
        "Could you send a quote for 100 seats? Thanks, great team.",
        "系统升级之后就打不开了，太让人失望了。",
    ]
    scored = model.predict(pd.DataFrame({"text": texts}))
    assert scored["intent"].tolist() == ["quote_request", "after_sales_support"]
    assert scored["sentiment"].tolist() == ["satisfied", "complaining"]
    assert scored["language"].tolist() == ["en", "zh"]
    with pytest.raises(UserError, match=r"texts\[1\]: text is empty"):
        model.predict(pd.DataFrame({"text": ["fine", ""]}))

    models = model.unwrap_python_model().models
    label, terms = mi.reasons(models, "intent", texts[0])
    assert label == "quote_request"
    assert terms and all(t["weight"] > 0 for t in terms)
    assert any(t["term"] in texts[0].lower() for t in terms)
    label, terms = mi.reasons(models, "intent", texts[1])
    assert label == "after_sales_support" and all(t["term"] in texts[1] for t in terms)


def test_lexicons_alone_read_plain_sentiment():
    texts = ["We are very happy with the service, thank you!", "This is awful and unacceptable."]
    assert mi.lexicon_sentiment(texts, ["en", "en"]).tolist() == ["satisfied", "complaining"]


def _scored(rows):
    frame = pd.DataFrame(
        rows, columns=["id", "contact_id", "sent_at", "intent", "intent_p", "sentiment", "text"]
    )
    frame["direction"], frame["channel"], frame["owner_id"] = "inbound", "email", 7
    frame["sent_at"] = pd.to_datetime(frame["sent_at"], format="ISO8601")
    return frame


NOW = datetime(2025, 6, 30, 12)


def test_contact_tags_read_the_newest_message_and_the_complaint_share():
    scored = _scored(
        [
            (1, 10, "2025-06-01", "after_sales_support", 0.9, "complaining", "broken"),
            (2, 10, "2025-06-20", "quote_request", 0.8, "satisfied", "quote please"),
            (3, 10, "2025-06-25", "technical_consultation", 0.6, "hesitant", "api?"),
            (4, 11, "2025-06-28", "after_sales_support", 1.0, "complaining", "still broken"),
            (5, 12, "2025-01-01", "after_sales_support", 1.0, "complaining", "old"),
            (6, 12, "2025-02-01", "after_sales_support", 1.0, "complaining", "old"),
            (7, 12, "2025-06-29", "quote_request", 1.0, "satisfied", "price?"),
            (8, 13, "2025-07-05", "quote_request", 1.0, "satisfied", "after now"),
        ]
    )
    tags = messages.contact_tags(scored, NOW).set_index("contact_id")

    assert sorted(tags.index) == [10, 11, 12]  # 13 wrote after `now`
    assert tags.loc[10, messages.TAG_LATEST_INTENT] == "technical_consultation"
    assert tags.loc[10, messages.TAG_COMPLAINT] == "true"  # 1 of 3 > 30 %
    assert tags.loc[11, messages.TAG_COMPLAINT] == "false"  # one message: below the minimum count
    assert tags.loc[12, messages.TAG_COMPLAINT] == "false"  # the complaints fell out of the window
    assert tags.loc[10, messages.TAG_NEED_PRIORITY] == "30"  # 0.5 × 0.6
    assert tags.loc[11, messages.TAG_NEED_PRIORITY] == "100"  # 0.8 × 1.0 × 1.25
    strict = messages.MessageRules(complaint_share=0.5)
    assert (
        messages.contact_tags(scored, NOW, strict)
        .set_index("contact_id")
        .loc[10, messages.TAG_COMPLAINT]
        == "false"
    )


def test_contact_tags_take_the_stored_need_priority_and_deals_their_newest_intent():
    """The batch computes contact tags from stored readings (need_priority, no intent_p)."""
    scored = _scored(
        [
            (1, 10, "2025-06-20", "quote_request", None, "satisfied", "quote please"),
            (2, 10, "2025-06-25", "technical_consultation", None, "hesitant", "api?"),
            (3, 11, "2025-06-25", "after_sales_support", None, "complaining", "broken"),
            (4, 11, "2025-07-05", "quote_request", None, "satisfied", "after now"),
        ]
    ).drop(columns="intent_p")
    scored["need_priority"] = ["81", "33", "90", "99"]
    scored["deal_id"] = [5, 5, 6, None]
    tags = messages.contact_tags(scored, NOW).set_index("contact_id")
    assert tags[messages.TAG_NEED_PRIORITY].to_dict() == {10: "33", 11: "90"}
    deals = messages.deal_tags(scored, NOW).set_index("deal_id")[messages.TAG_LATEST_INTENT]
    assert deals.to_dict() == {5: "technical_consultation", 6: "after_sales_support"}


def test_quote_requests_and_comparisons_become_tasks_once_per_message():
    scored = _scored(
        [
            (1, 10, "2025-06-29 09:00", "quote_request", 0.9, "satisfied", "quote for 50 seats"),
            (2, 11, "2025-06-28", "competitor_comparison", 0.9, "hesitant", "HubSpot is cheaper"),
            (3, 12, "2025-06-28", "competitor_comparison", 0.9, "hesitant", "why you and not them"),
            (4, 13, "2025-05-01", "quote_request", 0.9, "satisfied", "too old for a task"),
            (5, 14, "2025-06-29", "after_sales_support", 0.9, "complaining", "broken"),
        ]
    )
    tasks = {t.entity_id: t for t in messages.message_tasks(scored, NOW)}

    assert sorted(tasks) == [10, 11, 12]
    quote = tasks[10]
    assert quote.type == messages.TASK_QUOTE_FOLLOW_UP and quote.owner_id == 7
    assert quote.due_at == datetime(2025, 6, 30, 9) and quote.sla_hours == 24
    assert "Compared with HubSpot" in tasks[11].reason
    assert "Compared with a competitor" in tasks[12].reason
    again = {t.entity_id: t.dedup_key for t in messages.message_tasks(scored, NOW)}
    assert again == {k: t.dedup_key for k, t in tasks.items()}


def test_labels_are_read_in_the_vocabulary_and_unknown_ones_refused():
    frame = pd.DataFrame(
        {
            "body": ["Please share pricing for 20 seats.", "系统报错了，打不开"],
            "label": ["Quote request", "after-sales support"],
            "mood": ["satisfied", "angry"],
        }
    )
    data = mi.prepare(frame, "body", {"intent": "label"})
    assert data["intent"].tolist() == ["quote_request", "after_sales_support"]
    assert "sentiment" not in data
    with pytest.raises(UserError, match=r"row 3: mood 'angry' is no sentiment .*complaining"):
        mi.prepare(frame, "body", {"intent": "label", "sentiment": "mood"})
    frame["when"] = ["2025-01-02", "yesterday"]
    with pytest.raises(UserError, match="row 3: when 'yesterday' is not a time"):
        mi.prepare(frame, "body", {"intent": "label"}, time_col="when")


def _csv(tmp_path, n: int = 300, **columns) -> str:
    """English demo messages (VADER only: SnowNLP's model takes ~15 s to load) as a user's CSV."""
    frame = generate_messages(n, 4, START, END, zh_share=0.0)
    frame = frame.rename(columns={"text": "body", "intent": "label", "sentiment": "mood", "sent_at": "when"})  # fmt: skip
    for name, value in columns.items():
        frame[name] = value
    path = tmp_path / "texts.csv"
    frame.to_csv(path, index=False)
    return str(path)


def _store(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'cli' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_train_cli_on_a_labelled_csv_registers_a_challenger(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CRM_PREDICT_OPTUNA_TRIALS", "2")
    args = ["--text-col", "body", "--label-col", "label", "--sentiment-col", "mood", "--time-col", "when"]  # fmt: skip

    result = cli("train", "message_intent", "--csv", _csv(tmp_path), *args)

    assert result.exit_code == 0, result.output
    assert "message_intent version 1" in result.output and "intent_macro_f1_en=" in result.output
    client = _store(tmp_path)
    assert version_for_alias(client, "message_intent", CHALLENGER) == "1"
    run = client.get_run(client.get_model_version("message_intent", "1").run_id)
    assert run.data.tags["source"] == "csv:texts.csv" and run.data.tags["sentiment_labels"] == "given"  # fmt: skip
    for key in ("intent_macro_f1_en", "intent_macro_f1_majority_en", "intent_macro_f1_keyword_rule_en", "sentiment_accuracy_lexicon_en"):  # fmt: skip
        assert key in run.data.metrics
    assert run.data.tags["data_window"].startswith("train 2025-01")


def test_without_sentiment_labels_the_head_learns_the_lexicons_reading(mlflow_client):
    data = mi.prepare(generate_messages(300, 4, START, END, zh_share=0.0), label_cols={"intent": "intent"})  # fmt: skip

    result = mi.train(mlflow_client, data, n_trials=1)

    run = mlflow_client.get_run(result.run_id)
    assert run.data.tags["sentiment_labels"].startswith("lexicon")
    assert "sentiment_accuracy_lexicon_en" not in result.metrics  # the labels themselves
    assert (
        result.metrics["sentiment_accuracy_en"] > result.metrics["sentiment_accuracy_majority_en"]
    )


@pytest.mark.parametrize(
    ("columns", "args", "message"),
    [
        ({}, ["--text-col", "message"], "missing column(s) message"),
        ({"label": "pricing"}, [], "label 'pricing' is no intent"),
        ({"mood": "meh"}, [], "mood 'meh' is no sentiment"),
        ({"body": ""}, [], "row 2: text is empty"),
        ({"body": "\x07\x08 price binary"}, [], "row 2: text holds control characters"),
        ({"when": "soon"}, [], "when 'soon' is not a time"),
        ({}, ["--label-col", ""], "--csv needs --label-col COLUMN"),
    ],
    ids=[
        "missing-column",
        "unknown-intent",
        "unknown-sentiment",
        "empty-text",
        "binary",
        "bad-time",
        "no-label",
    ],  # fmt: skip
)
def test_a_malformed_csv_is_a_clear_error_and_nothing_reaches_mlflow(cli, tmp_path, columns, args, message):  # fmt: skip
    base = {"--text-col": "body", "--label-col": "label", "--sentiment-col": "mood", "--time-col": "when"}  # fmt: skip
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    options = [x for flag, value in base.items() if value for x in (flag, value)]

    result = cli("train", "message_intent", "--csv", _csv(tmp_path, 60, **columns), *options)

    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "cli" / "mlflow.db").exists() or not _store(tmp_path).search_registered_models()  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "the file is empty"), ("body,label\n", "has a header but no rows")],
)
def test_an_empty_csv_is_a_clear_error(cli, tmp_path, content, message):
    path = tmp_path / "texts.csv"
    path.write_text(content)
    result = cli("train", "message_intent", "--csv", str(path), "--text-col", "body", "--label-col", "label")  # fmt: skip
    assert result.exit_code == 2 and message in result.output


def test_text_options_belong_to_message_intent_and_csv_to_its_columns(cli):
    result = cli("train", "message_intent", "--text-col", "body")
    assert result.exit_code == 2 and "--text-col go with --csv" in result.output
    result = cli("train", "churn", "--label-col", "label")
    assert result.exit_code == 2 and "--label-col are for message_intent" in result.output


def test_too_few_labelled_messages_are_refused(mlflow_client):
    data = mi.prepare(generate_messages(40, 4, START, END, zh_share=0.0))
    with pytest.raises(UserError, match="40 labelled messages; at least 50"):
        mi.train(mlflow_client, data, n_trials=1, lexicons=False)
    assert not mlflow_client.search_registered_models()


def test_the_registry_gates_and_cards_the_text_model(mlflow_client):
    """Gates for a first version, a card naming the text feature, the text spec's purpose and
    metric rows, and a second version judged against the champion on the key metrics."""
    from crm_predict.registry import card, gates

    data = mi.prepare(_messages(800))
    first = mi.train(mlflow_client, data, n_trials=1, lexicons=False)
    config = gates.GateConfig()
    report = gates.check_gates(mlflow_client, "message_intent", first.version, config)
    assert report.results[0].passed  # no champion yet
    assert "- `text`" in card.write_model_card(mlflow_client, "message_intent", first.version)
    mlflow_client.set_registered_model_alias("message_intent", "champion", first.version)

    second = mi.train(mlflow_client, data, n_trials=1, seed=1, lexicons=False)
    markdown = card.write_model_card(mlflow_client, "message_intent", second.version)
    assert mi.MODEL.purpose in markdown and "| intent_macro_f1_en |" in markdown
    assert "## Text model" in markdown
    report = gates.check_gates(mlflow_client, "message_intent", second.version, config)
    not_worse = next(r for r in report.results if r.name == "not_worse_than_champion")
    assert not_worse.passed and "intent_macro_f1_en" in not_worse.detail
    assert all(r.passed or not r.applicable for r in report.results)


def test_the_served_tfidf_rows_are_the_vectorizers_own():
    """``TextModels.rows`` (the online path, without sklearn's input checks) gives what
    ``vectorizer.transform`` gives, also for a vectorizer built otherwise."""
    data = mi.prepare(_messages(400))
    models = mi.fit(data, 4, 10.0, 10.0)
    texts = _messages(60, seed=8)["text"].tolist()
    rows, x = models.rows(texts)
    expected = models.vectorizer.transform(texts)
    assert abs(x - expected).max() < 1e-12 and x.has_sorted_indices
    assert [c.tolist() for c, _ in rows] == [expected[i].indices.tolist() for i in range(len(texts))]  # fmt: skip
    p = models.probabilities("intent", x)
    assert abs(p - models.intent.predict_proba(expected)).max() < 1e-12
    models.vectorizer.set_params(sublinear_tf=False)
    models.vectorizer.fit(data["text"])
    _, x = models.rows(texts)
    assert abs(x - models.vectorizer.transform(texts)).max() == 0
