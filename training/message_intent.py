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

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from crm_predict.core.errors import UserError
from crm_predict.core.messages import LANGUAGES, TS

MAX_CHARS = 20_000
TEXT, LANGUAGE = "text", "language"
HOLDOUT_SHARE, VALIDATION_SHARE = 0.2, 0.15

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
_LATIN = re.compile(r"[A-Za-z]")
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


def reasons(vec, model, text: str, k: int = 5) -> tuple[str, list[dict[str, float]]]:
    """(class, the terms that drove it): n-grams ranked by TF-IDF × (the class's weight − the
    other classes' mean weight), each shown as the word of ``text`` holding it (Chinese: the
    n-gram itself, two characters or more), overlapping terms kept once."""
    row = vec.transform([text])
    k_class = int(np.argmax(model.decision_function(row)[0]))
    coef = model.coef_
    if len(coef) == 1:  # two classes: one weight vector, for classes_[1]
        coef = np.vstack([-coef[0], coef[0]])
    others = np.delete(coef, k_class, axis=0).mean(axis=0)
    weights = row.data * (coef[k_class, row.indices] - others[row.indices])
    vocabulary = vec.get_feature_names_out()
    words = re.findall(r"\S+", text.lower())
    terms: list[dict[str, float]] = []
    for j in np.argsort(-weights):
        if weights[j] <= 0 or len(terms) == k:
            break
        gram = re.sub(r"[\W\d_]", "", vocabulary[row.indices[j]])
        if len(gram) < (2 if _CJK.search(gram) else 3):
            continue
        term = (
            gram
            if _CJK.search(gram)
            else next((w.strip(".,!?;:") for w in words if gram in w), gram)
        )
        if any(term in t["term"] or t["term"] in term for t in terms):
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
    p_intent, p_sentiment = models.intent.predict_proba(x), models.sentiment.predict_proba(x)
    return pd.DataFrame(
        {
            "language": [lang for _, lang in checked],
            "intent": models.intent.classes_[p_intent.argmax(axis=1)],
            "intent_p": p_intent.max(axis=1).round(4),
            "sentiment": models.sentiment.classes_[p_sentiment.argmax(axis=1)],
            "sentiment_p": p_sentiment.max(axis=1).round(4),
        }
    )


def prepare(frame: pd.DataFrame, text_col: str = TEXT, label_cols: Mapping[str, str] | None = None) -> pd.DataFrame:  # fmt: skip
    """A labelled message table in the training shape (``text, language, intent, sentiment``,
    ``sent_at`` when given): bad texts and unlabelled rows are refused with their row number."""
    label_cols = dict(label_cols or {"intent": "intent", "sentiment": "sentiment"})
    missing = [c for c in (text_col, *label_cols.values()) if c not in frame.columns]
    if missing:
        raise UserError(
            f"missing column(s) {', '.join(missing)}; the table has {', '.join(map(str, frame.columns))}"
        )
    out = pd.DataFrame({TEXT: frame[text_col].astype(object)})
    for target, source in label_cols.items():
        labels = frame[source].astype("string").str.strip()
        empty = labels.isna() | (labels == "")
        if empty.any():
            raise UserError(
                f"row {int(np.flatnonzero(empty.to_numpy())[0]) + 2}: no {source} label"
            )
        out[target] = labels.to_numpy(dtype=object)
    languages = []
    for i, text in enumerate(out[TEXT]):
        try:
            out.loc[i, TEXT], language = check_text(text)
        except UserError as exc:
            raise UserError(f"row {i + 2}: {exc}") from None
        languages.append(language)
    out[LANGUAGE] = languages
    if TS in frame.columns:
        out[TS] = pd.to_datetime(frame[TS].to_numpy())
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
    ``frame`` is in the training shape (:func:`prepare`)."""
    from crm_predict.training.tracking import log_pyfunc_run

    if len(frame) < 50:
        raise UserError(
            f"{len(frame)} labelled messages; at least 50 are needed to train and hold out"
        )
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
        "message_intent",
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
        tags={"entity": "message", "data_window": window, "source": source},
        dicts={"config/intent_keywords.json": {k: list(v) for k, v in INTENT_KEYWORDS.items()}},
    )
    return MessageTraining(logged.run_id, logged.version, evaluation.metrics, best)
