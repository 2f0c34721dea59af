"""Intent and sentiment of what customers write, in English and Chinese.

Two scikit-learn pipelines over character n-grams (TF-IDF, ``char_wb``) with a multinomial logistic
regression each: character n-grams need no word segmentation, so one pipeline reads Chinese and
English alike, and nothing is downloaded at run time. Optuna tunes the regularisation and the
longest n-gram on a time-ordered validation split; the newest messages are the holdout, scored per
language against a majority-class and a keyword-rule baseline (intent) and against the VADER
(English) and SnowNLP (Chinese) lexicons alone (sentiment). Reasons are the n-grams that pushed
the text toward its class (weight × TF-IDF), shown as the words of the text that hold them.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from crm_predict.core.errors import UserError
from crm_predict.core.messages import INTENTS, LANGUAGES, SENTIMENTS, TS

MAX_CHARS = 20_000
TEXT, LANGUAGE = "text", "language"
HOLDOUT_SHARE, VALIDATION_SHARE = 0.2, 0.15
MIN_MESSAGES = 50
# Demo training data: the CRM store's labelled messages when it holds this many, else the
# generator's, over the year before the demo CRM's ``as_of``.
MIN_STORE_MESSAGES, DEMO_MESSAGES = 500, 4000
DEMO_END = datetime(2026, 6, 30)
VOCABULARY = {"intent": INTENTS, "sentiment": SENTIMENTS}


@dataclass(frozen=True)
class TextModelSpec:
    """What the registry and the CLI know about a text model: the fields of
    ``crm_predict.core.model_spec.ModelSpec`` they read, under the same names, and no
    FeatureService (see ``crm_predict.training.specs``)."""

    name: str
    entity: str  # what one row is (a message)
    crm_entity: str  # entity_type of the tags its readings become
    purpose: str
    known_limits: str
    quality: tuple[str, str | None, str | None]
    key_metrics: tuple[tuple[str, bool], ...]
    card_metrics: tuple[tuple[str, str | None, str | None], ...]
    train_metrics: tuple[str, ...]
    card_lines: Callable[[Mapping[str, str], Mapping[str, str]], list[str]] | None = None
    kind: str = "text"
    decision_threshold: None = None
    lower_is_better: bool = False
    is_classifier: bool = False


def card_lines(params: Mapping[str, str], tags: Mapping[str, str]) -> list[str]:
    """How the text was read and which baselines the card's table stands beside."""
    return [
        "",
        "## Text model",
        f"- TF-IDF over character n-grams ({params.get('analyzer', 'char_wb')}, 1–"
        f"{params.get('max_n', '?')}), logistic heads C = {params.get('c_intent', '?')} (intent), "
        f"{params.get('c_sentiment', '?')} (sentiment)",
        f"- Sentiment labels: {tags.get('sentiment_labels', 'given')}",
        "- Baselines: intent beside the keyword rule (table) and the majority class "
        "(`intent_macro_f1_majority_*`); sentiment beside VADER / SnowNLP alone "
        "(`sentiment_accuracy_lexicon_*`)",
    ]


MODEL = TextModelSpec(
    name="message_intent",
    entity="message",
    crm_entity="contact",
    purpose="Intent (technical consultation, quote request, competitor comparison, after-sales "
    "support) and sentiment (satisfied, complaining, hesitant) of what a customer writes, in "
    "English and Chinese, with the terms that drove each reading.",
    known_limits="Reads English and Chinese only (other text is refused); trained on templated "
    "demo messages unless given labelled ones, so real phrasing may read less well.",
    quality=("intent_macro_f1_all", "intent_macro_f1_keyword_rule_all", None),
    key_metrics=(
        ("intent_macro_f1_en", True), ("intent_macro_f1_zh", True),
        ("sentiment_accuracy_en", True), ("sentiment_accuracy_zh", True),
    ),
    card_metrics=tuple(
        (f"{kind}_{language}", f"{base}_{language}", None)
        for kind, base in (
            ("intent_macro_f1", "intent_macro_f1_keyword_rule"),
            ("sentiment_accuracy", "sentiment_accuracy_lexicon"),
        )
        for language in ("en", "zh", "all")
    ),
    train_metrics=(
        "intent_macro_f1_en", "intent_macro_f1_keyword_rule_en", "intent_macro_f1_majority_en",
        "intent_macro_f1_zh", "intent_macro_f1_keyword_rule_zh", "intent_macro_f1_majority_zh",
        "sentiment_accuracy_en", "sentiment_accuracy_lexicon_en",
        "sentiment_accuracy_zh", "sentiment_accuracy_lexicon_zh",
    ),
    card_lines=card_lines,
)  # fmt: skip

# The keyword rule a team would write first: the intent whose words occur most (ties: this order).
INTENT_KEYWORDS: dict[str, tuple[str, ...]] = {
    "technical_consultation": (
        "support", "configure", "integrate", "api", "requirements", "server", "how do i",
        "支持", "配置", "对接", "接口", "服务器", "怎么",
    ),
    "quote_request": (
        "quote", "price", "pricing", "cost", "offer", "discount", "proposal", "how much",
        "报价", "价格", "多少钱", "折扣", "年费", "方案",
    ),
    "competitor_comparison": (
        "compare", "competitor", "better", "switch", "salesforce", "hubspot", "zoho", "pipedrive",
        "dynamics", "比", "优势", "换成", "纷享销客", "销售易", "钉钉",
    ),
    "after_sales_support": (
        "broken", "error", "crash", "damaged", "replacement", "invoice", "delivered", "arrived",
        "password", "stopped working", "坏", "报错", "错误", "换货", "发票", "送到", "密码", "打不开",
    ),
}  # fmt: skip

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_LATIN = re.compile(r"[A-Za-z]")
_WORD = re.compile(r"[a-z]+(?:['’-][a-z]+)*")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def detect_language(text: str) -> str | None:
    """``zh`` when Chinese characters make up a fair share of the letters (product names in Latin
    letters are common in Chinese messages), ``en`` for Latin text, else None."""
    cjk, latin = len(_CJK.findall(text)), len(_LATIN.findall(text))
    if cjk + latin < 2:
        return None
    if 2 * cjk >= 0.3 * (2 * cjk + latin):  # a Chinese character carries about two letters' worth
        return "zh"
    letters = sum(1 for c in text if unicodedata.category(c).startswith("L"))
    return "en" if latin >= 0.6 * letters else None


def check_text(text: Any, max_chars: int = MAX_CHARS) -> tuple[str, str]:
    """(stripped text, language) or UserError saying what is wrong: empty, too long, binary,
    or in a language the model was not trained for."""
    if not isinstance(text, str):
        raise UserError(f"text must be a string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise UserError("text is empty")
    if len(text) > max_chars:
        raise UserError(f"text has {len(text):,} characters; at most {max_chars:,} are scored")
    if _CONTROL.search(text) or text.count("\ufffd") > max(1, len(text) // 100):
        raise UserError("text holds control characters or undecodable bytes (binary data?)")
    language = detect_language(text)
    if language is None:
        raise UserError(f"text is in no language the model reads ({', '.join(LANGUAGES)})")
    return text, language


def keyword_intent(texts: Sequence[str], keywords: Mapping[str, Sequence[str]] = INTENT_KEYWORDS, default: str | None = None) -> np.ndarray:  # fmt: skip
    """The keyword-rule baseline: the intent with most keyword hits, ``default`` when none hit."""
    names = list(keywords)
    out = []
    for text in texts:
        lowered = text.lower()
        hits = [sum(lowered.count(k) for k in keywords[n]) for n in names]
        out.append(names[int(np.argmax(hits))] if max(hits) else (default or names[0]))
    return np.asarray(out, dtype=object)


def lexicon_sentiment(texts: Sequence[str], languages: Sequence[str]) -> np.ndarray:
    """Sentiment from the lexicons alone: VADER's compound score for English, SnowNLP's positive
    probability for Chinese; the middle band is read as hesitant."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader, snow = SentimentIntensityAnalyzer(), None
    out = []
    for text, language in zip(texts, languages, strict=True):
        if language == "zh":
            if snow is None:
                from snownlp import SnowNLP as snow  # loads its model: ~15 s, once
            p = snow(text).sentiments
            score = (p - 0.5) * 2
        else:
            score = vader.polarity_scores(text)["compound"]
        out.append(
            "satisfied" if score >= 0.05 else "complaining" if score <= -0.05 else "hesitant"
        )
    return np.asarray(out, dtype=object)


def vectorizer(max_n: int):
    """TF-IDF over character n-grams within word boundaries, shared by both heads."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(analyzer="char_wb", ngram_range=(1, max_n), sublinear_tf=True, min_df=2, max_features=200_000)  # fmt: skip


def head(c: float, seed: int = 0):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=2000, random_state=seed)


@dataclass
class TextModels:
    """The fitted vectorizer and its two heads."""

    vectorizer: Any
    intent: Any
    sentiment: Any

    @cached_property
    def grams(self) -> np.ndarray:
        """Per column, how a reason shows its n-gram: the longest run of Chinese characters in
        it (two or more; punctuation splits runs), else its Latin letters (three or more), else
        "" (never shown). Built once, at load (``warm``)."""
        shown = []
        for gram in self.vectorizer.get_feature_names_out():
            chinese = max(_CJK_RUN.findall(gram), key=len, default="")
            letters = "" if chinese else re.sub(r"[^a-z]", "", gram)
            shown.append(chinese if len(chinese) >= 2 else letters if len(letters) >= 3 else "")
        return np.asarray(shown, dtype=object)

    @cached_property
    def analyzer(self) -> Callable[[str], list[str]]:
        return self.vectorizer.build_analyzer()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("grams", "analyzer")}

    def warm(self) -> None:
        """Build the caches now rather than on the first request."""
        self.grams, self.analyzer  # noqa: B018 - cached on first read

    def rows(self, texts: Sequence[str]) -> tuple[list[tuple[np.ndarray, np.ndarray]], Any]:
        """(per text its TF-IDF row as (columns, values), the rows as one CSR matrix): what
        ``vectorizer.transform`` gives for the vectorizer ``vectorizer()`` builds (sublinear TF,
        IDF, l2 norm), without its input checks, which cost more than the row of one short
        message."""
        from scipy.sparse import csr_matrix

        vec = self.vectorizer
        if not (vec.sublinear_tf and vec.use_idf and vec.norm == "l2"):  # not ours: sklearn's
            x = vec.transform(texts)
            return [(x.indices[a:b], x.data[a:b]) for a, b in itertools.pairwise(x.indptr)], x
        vocabulary, idf = vec.vocabulary_, vec.idf_
        rows = []
        for text in texts:
            counts = Counter(j for j in map(vocabulary.get, self.analyzer(text)) if j is not None)
            columns = np.fromiter(counts, dtype=np.int64, count=len(counts))
            order = np.argsort(columns)
            columns = columns[order]
            tf = np.fromiter(counts.values(), dtype=float, count=len(counts))[order]
            values = (1 + np.log(tf)) * idf[columns]
            norm = np.sqrt(values @ values)
            rows.append((columns, values / norm if norm else values))
        indptr = np.cumsum([0, *(len(c) for c, _ in rows)])
        data = np.concatenate([v for _, v in rows]) if rows else np.zeros(0)
        indices = np.concatenate([c for c, _ in rows]) if rows else np.zeros(0, dtype=np.int64)
        return rows, csr_matrix((data, indices, indptr), shape=(len(rows), len(idf)))

    def probabilities(self, head: str, x) -> np.ndarray:
        """``predict_proba`` of head ``intent`` or ``sentiment`` on TF-IDF rows ``x``, without
        sklearn's input checks (the vectorizer's rows are valid by construction, and the checks
        cost more than the product: a third of a single message's scoring)."""
        model = getattr(self, head)
        scores = np.asarray(x @ model.coef_.T) + model.intercept_
        if scores.shape[1] == 1:  # two classes: the logistic of one score, for classes_[1]
            p = 1 / (1 + np.exp(-scores[:, 0]))
            return np.column_stack([1 - p, p])
        scores -= scores.max(axis=1, keepdims=True)  # softmax, as the multinomial head's
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        x = self.vectorizer.transform(texts)
        return self.intent.predict(x), self.sentiment.predict(x)


def time_split(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Oldest rows train, the next validate, the newest are the holdout."""
    frame = frame.sort_values(TS, kind="stable").reset_index(drop=True) if TS in frame else frame
    n = len(frame)
    holdout_from = int(n * (1 - HOLDOUT_SHARE))
    validation_from = int(holdout_from * (1 - VALIDATION_SHARE))
    return (
        frame.iloc[:validation_from],
        frame.iloc[validation_from:holdout_from],
        frame.iloc[holdout_from:],
    )


def macro_f1(truth, predicted) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(truth, predicted, average="macro", zero_division=0))


def fit(
    frame: pd.DataFrame, max_n: int, c_intent: float, c_sentiment: float, seed: int = 0
) -> TextModels:
    vec = vectorizer(max_n)
    x = vec.fit_transform(frame[TEXT])
    return TextModels(vec, head(c_intent, seed).fit(x, frame["intent"]), head(c_sentiment, seed).fit(x, frame["sentiment"]))  # fmt: skip


def tune(train: pd.DataFrame, validation: pd.DataFrame, n_trials: int, seed: int) -> tuple[TextModels, dict, float]:  # fmt: skip
    """Optuna over the longest n-gram and each head's regularisation, by the mean validation
    macro-F1 of intent and sentiment; the best is refitted on train + validation. Returns
    (models, best params, best validation score)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    matrices: dict[int, tuple] = {}  # one vectorizer fit per n-gram length

    def objective(trial) -> float:
        max_n = trial.suggest_int("max_n", 2, 5)
        if max_n not in matrices:
            vec = vectorizer(max_n)
            matrices[max_n] = (vec.fit_transform(train[TEXT]), vec.transform(validation[TEXT]))
        x_train, x_validation = matrices[max_n]
        scores = []
        for label in ("intent", "sentiment"):
            model = head(trial.suggest_float(f"c_{label}", 0.3, 100, log=True), seed)
            model.fit(x_train, train[label])
            scores.append(macro_f1(validation[label], model.predict(x_validation)))
        return float(np.mean(scores))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial({"max_n": 4, "c_intent": 10.0, "c_sentiment": 10.0})
    study.optimize(objective, n_trials=max(1, n_trials))
    best = dict(study.best_params)
    models = fit(pd.concat([train, validation]), best["max_n"], best["c_intent"], best["c_sentiment"], seed)  # fmt: skip
    return models, best, float(study.best_value)


def reasons(models: TextModels, head: str, text: str, k: int = 5, row: tuple[np.ndarray, np.ndarray] | None = None, k_class: int | None = None) -> tuple[str, list[dict[str, float]]]:  # fmt: skip
    """(class, the terms that drove it) of head ``intent`` or ``sentiment``: n-grams ranked by
    TF-IDF × (the class's weight − the other classes' mean weight), each shown as the word of
    ``text`` holding it (Chinese: its characters, two or more), overlapping terms kept once.
    ``row`` (the text's (columns, values), :meth:`TextModels.rows`) and ``k_class`` (its
    class's index) when the caller has them."""
    model = getattr(models, head)
    if row is None or k_class is None:
        (row,), x = models.rows([text])
        k_class = int(np.argmax(models.probabilities(head, x)[0]))
    columns, values = row
    coef = model.coef_[:, columns]  # only the text's n-grams: a few hundred of 200k columns
    if len(coef) == 1:  # two classes: one weight vector, for classes_[1]
        coef = np.vstack([-coef[0], coef[0]])
    others = (coef.sum(axis=0) - coef[k_class]) / max(1, len(coef) - 1)
    weights = values * (coef[k_class] - others)
    shown = models.grams[columns]
    words = _WORD.findall(text.lower())
    terms: list[dict[str, float]] = []
    for j in np.argsort(-weights, kind="stable"):
        if weights[j] <= 0 or len(terms) == k:
            break
        term = shown[j]
        if term and not _CJK.match(term):  # the Latin word of the text holding the n-gram
            term = next((w for w in words if term in w), term)
        if not term or any(term in t["term"] or t["term"] in term for t in terms):
            continue
        terms.append({"term": term, "weight": round(float(weights[j]), 4)})
    return str(model.classes_[k_class]), terms


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    holdout: pd.DataFrame


def evaluate(models: TextModels, train: pd.DataFrame, holdout: pd.DataFrame, lexicons: bool = True) -> Evaluation:  # fmt: skip
    """Holdout figures per language: intent macro-F1 (model, majority class, keyword rule) and
    sentiment accuracy (model, majority class, lexicon alone)."""
    scored = holdout.copy()
    scored["intent_predicted"], scored["sentiment_predicted"] = models.predict(
        scored[TEXT].tolist()
    )
    scored["intent_keyword_rule"] = keyword_intent(scored[TEXT], default=train["intent"].mode()[0])
    if lexicons:
        scored["sentiment_lexicon"] = lexicon_sentiment(
            scored[TEXT].tolist(), scored[LANGUAGE].tolist()
        )
    majority_intent, majority_sentiment = train["intent"].mode()[0], train["sentiment"].mode()[0]
    metrics: dict[str, float] = {}
    for language, part in [("all", scored), *scored.groupby(LANGUAGE)]:
        if not len(part):
            continue
        metrics[f"intent_macro_f1_{language}"] = macro_f1(part["intent"], part["intent_predicted"])
        metrics[f"intent_macro_f1_majority_{language}"] = macro_f1(
            part["intent"], [majority_intent] * len(part)
        )
        metrics[f"intent_macro_f1_keyword_rule_{language}"] = macro_f1(
            part["intent"], part["intent_keyword_rule"]
        )
        metrics[f"sentiment_accuracy_{language}"] = float(
            (part["sentiment"] == part["sentiment_predicted"]).mean()
        )
        metrics[f"sentiment_accuracy_majority_{language}"] = float(
            (part["sentiment"] == majority_sentiment).mean()
        )
        if lexicons:
            metrics[f"sentiment_accuracy_lexicon_{language}"] = float(
                (part["sentiment"] == part["sentiment_lexicon"]).mean()
            )
        metrics[f"n_holdout_{language}"] = float(len(part))
    return Evaluation(metrics, scored)


class MessageModel(mlflow.pyfunc.PythonModel):
    """Served message model: ``text`` in; ``language, intent, intent_p, sentiment, sentiment_p``
    out. The fitted vectorizer and heads are attributes, so the service reads reasons from them."""

    def __init__(self, models: TextModels):
        self.models = models

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        return predict_messages(self.models, pd.DataFrame(model_input)[TEXT].tolist())


def predict_messages(models: TextModels, texts: Sequence[str]) -> pd.DataFrame:
    """One row per text (each checked first: UserError names the first bad one)."""
    checked = []
    for i, text in enumerate(texts):
        try:
            checked.append(check_text(text))
        except UserError as exc:
            raise UserError(f"texts[{i}]: {exc}") from None
    x = models.vectorizer.transform([t for t, _ in checked])
    p_intent, p_sentiment = models.probabilities("intent", x), models.probabilities("sentiment", x)
    return pd.DataFrame(
        {
            "language": [lang for _, lang in checked],
            "intent": models.intent.classes_[p_intent.argmax(axis=1)],
            "intent_p": p_intent.max(axis=1).round(4),
            "sentiment": models.sentiment.classes_[p_sentiment.argmax(axis=1)],
            "sentiment_p": p_sentiment.max(axis=1).round(4),
        }
    )


def label_value(label: str) -> str:
    """A label as the vocabulary spells it: ``Quote request`` → ``quote_request``."""
    return re.sub(r"[\s-]+", "_", label.strip().lower())


def prepare(frame: pd.DataFrame, text_col: str = TEXT, label_cols: Mapping[str, str] | None = None, time_col: str | None = None) -> pd.DataFrame:  # fmt: skip
    """A labelled message table in the training shape (``text, language, intent``, ``sentiment``
    when labelled, ``sent_at`` from ``time_col`` or a ``sent_at`` column): missing columns, bad
    texts, missing or unknown labels and unreadable times are refused with their row number."""
    label_cols = dict(label_cols or {"intent": "intent", "sentiment": "sentiment"})
    time_col = time_col or (TS if TS in frame.columns else None)
    wanted = [text_col, *label_cols.values(), *([time_col] if time_col else [])]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise UserError(
            f"missing column(s) {', '.join(missing)}; the table has {', '.join(map(str, frame.columns))}"
        )
    if frame.empty:
        raise UserError("the table has no rows")
    frame = frame.reset_index(drop=True)
    # A blank cell is an empty text and a number in a text column its digits (as a CSV reads).
    texts = frame[text_col].astype(object)
    out = pd.DataFrame({TEXT: [v if isinstance(v, str) else "" if pd.isna(v) else str(v) for v in texts]})  # fmt: skip
    for target, source in label_cols.items():
        labels = frame[source].astype("string").str.strip()
        empty = labels.isna() | (labels == "")
        if empty.any():
            raise UserError(
                f"row {int(np.flatnonzero(empty.to_numpy())[0]) + 2}: no {source} label"
            )
        out[target] = [label_value(v) for v in labels]
    languages = []
    for i, text in enumerate(out[TEXT]):
        try:
            out.loc[i, TEXT], language = check_text(text)
        except UserError as exc:
            raise UserError(f"row {i + 2}: {exc}") from None
        languages.append(language)
    out[LANGUAGE] = languages
    for target, source in label_cols.items():
        unknown = ~out[target].isin(VOCABULARY[target])
        if unknown.any():
            i = int(np.flatnonzero(unknown.to_numpy())[0])
            raise UserError(
                f"row {i + 2}: {source} {frame[source][i]!r} is no {target} the product knows "
                f"({', '.join(VOCABULARY[target])})"
            )
    if time_col:
        times = pd.to_datetime(frame[time_col], errors="coerce", format="mixed")
        if times.isna().any():
            i = int(np.flatnonzero(times.isna().to_numpy())[0])
            raise UserError(f"row {i + 2}: {time_col} {frame[time_col][i]!r} is not a time")
        if times.dt.tz is not None:  # naive UTC everywhere
            times = times.dt.tz_convert("UTC").dt.tz_localize(None)
        out[TS] = times.to_numpy()
    for target in label_cols:
        counts = out[target].value_counts()
        if len(counts) < 2:
            raise UserError(
                f"{target}: one class only ({counts.index[0]}); a model needs two or more"
            )
    return out


@dataclass(frozen=True)
class MessageTraining:
    run_id: str
    version: str
    metrics: dict[str, float]
    params: dict[str, Any]


def train(
    client,
    frame: pd.DataFrame,
    *,
    n_trials: int = 8,
    seed: int = 0,
    lexicons: bool = True,
    source: str = "demo",
) -> MessageTraining:
    """Tune, evaluate on the newest messages and register ``message_intent`` (alias challenger).
    ``frame`` is in the training shape (:func:`prepare`); without a ``sentiment`` column the
    sentiment head learns the lexicons' reading (and is not scored against them)."""
    from crm_predict.training.tracking import log_pyfunc_run

    if len(frame) < MIN_MESSAGES:
        raise UserError(
            f"{len(frame)} labelled messages; at least {MIN_MESSAGES} are needed to train and "
            "hold out"
        )
    sentiment_labels = "given"
    if "sentiment" not in frame:  # unlabelled: the lexicons' reading, learnt by the head
        frame = frame.assign(sentiment=lexicon_sentiment(frame[TEXT].tolist(), frame[LANGUAGE].tolist()))  # fmt: skip
        sentiment_labels, lexicons = "lexicon (VADER / SnowNLP: none given)", False
    train_part, validation, holdout = time_split(frame)
    models, best, validation_score = tune(train_part, validation, n_trials, seed)
    evaluation = evaluate(models, train_part, holdout, lexicons=lexicons)
    example = pd.DataFrame({TEXT: holdout[TEXT].head(3).tolist()})
    window = (
        f"train {frame[TS].min():%Y-%m-%d}..{holdout[TS].min():%Y-%m-%d}, holdout ..{frame[TS].max():%Y-%m-%d}"
        if TS in frame
        else f"train {len(train_part) + len(validation)} rows, holdout {len(holdout)} newest"
    )
    logged = log_pyfunc_run(
        client,
        MODEL.name,
        MessageModel(models),
        example,
        predict_messages(models, example[TEXT].tolist()),
        requirements=("scikit-learn", "pandas", "numpy"),
        holdout=evaluation.holdout,
        params={**best, "seed": seed, "n_trials": n_trials, "analyzer": "char_wb"},
        metrics={
            **evaluation.metrics,
            "validation_score": validation_score,
            "n_train": float(len(train_part) + len(validation)),
        },
        tags={
            "entity": MODEL.entity,
            "data_window": window,
            "source": source,
            "feature_names": json.dumps([TEXT]),
            "feature_service": "none: reads the message text",
            "sentiment_labels": sentiment_labels,
        },
        dicts={"config/intent_keywords.json": {k: list(v) for k, v in INTENT_KEYWORDS.items()}},
    )
    return MessageTraining(logged.run_id, logged.version, evaluation.metrics, best)


def demo_messages(settings: Any, n: int = DEMO_MESSAGES) -> tuple[pd.DataFrame, str]:
    """(messages, source): the CRM store's labelled inbound messages when it holds at least
    ``MIN_STORE_MESSAGES``, else ``n`` from the demo generator (seeded by the settings)."""
    from crm_predict.crm_store.db import store_session
    from crm_predict.crm_store.demo_messages import generate_messages
    from sqlalchemy import inspect, text

    with store_session(settings.crm_url) as session:
        if inspect(session.connection()).has_table("messages"):
            query = text(
                f"SELECT text, intent, sentiment, {TS} FROM messages WHERE direction = 'inbound' "
                "AND intent IS NOT NULL AND sentiment IS NOT NULL ORDER BY " + TS
            )
            stored = pd.DataFrame(session.execute(query).all(), columns=[TEXT, "intent", "sentiment", TS])  # fmt: skip
            if len(stored) >= MIN_STORE_MESSAGES:
                return stored, "crm_store:messages"
    start = DEMO_END - timedelta(days=365)
    return generate_messages(n, settings.seed, start, DEMO_END), "demo"


def training_data(
    settings: Any,
    csv: Path | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    sentiment_col: str | None = None,
    time_col: str | None = None,
    n_messages: int = DEMO_MESSAGES,
) -> tuple[pd.DataFrame, str]:
    """(messages in the training shape, source) for ``crm-predict train message_intent``: the
    demo messages, or a user's labelled CSV, checked whole before anything reaches MLflow."""
    from crm_predict.core.errors import read_user_csv

    columns = {"--text-col": text_col, "--label-col": label_col}
    given = {**columns, "--sentiment-col": sentiment_col, "--time-col": time_col}
    if csv is None:
        if any(given.values()):
            raise UserError(f"{', '.join(k for k, v in given.items() if v)} go with --csv")
        frame, source = demo_messages(settings, n_messages)
        return prepare(frame), source
    missing = [flag for flag, value in columns.items() if not value]
    if missing:
        raise UserError(f"--csv needs {' and '.join(f'{m} COLUMN' for m in missing)}")
    labels = {"intent": label_col} | ({"sentiment": sentiment_col} if sentiment_col else {})
    frame = read_user_csv(csv, "messages CSV")
    return prepare(frame, text_col, labels, time_col), f"csv:{csv.name}"
