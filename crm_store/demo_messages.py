"""Bilingual (English, Chinese) customer messages for the demo CRM, with their intent and sentiment
known. Written to be read as real ones are, not separated by a template's wording:

* intents share their vocabulary: a price in a support request (a wrong invoice), a competitor in
  a technical question (importing from it) or a quote request (its lower offer), a feature in a
  quote;
* sentiment is hedged, mixed or sarcastic ("Great, another outage."), often beside words of the
  other mood ("not bad at all"), and short chat lines carry it only by an emoji or a word;
* one-line chat messages ("price?", "还是打不开"), emoji, typos, casing, and English words in
  Chinese text (code-switching: "能给个quote吗");
* ``LABEL_NOISE`` of the labels are another class, as a team's hand labels are.

The labels are the generator's, so a model is scored against (slightly noisy) ground truth and a
keyword rule is misled as it would be on real text. ``write_messages`` takes per-message weights
on the intent and sentiment draws: the demo CRM leans them on outcomes it knows (``demo.py``).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
from crm_predict.crm_store.models import MESSAGE_CHANNELS as CHANNELS

from crm_predict.core.messages import INTENTS, SENTIMENTS

SLOTS = {
    "en": {
        "product": ("CloudDesk", "DataHub Pro", "SalesBox", "the platform", "your CRM"),
        "competitor": ("Salesforce", "HubSpot", "Zoho", "Pipedrive", "Dynamics"),
        "feature": (
            "single sign-on",
            "custom reports",
            "the mobile app",
            "data export",
            "workflows",
        ),
        "system": ("ERP", "SAP system", "data warehouse", "email server", "ticketing tool"),
        "qty": ("20", "50", "100", "250", "a few hundred"),
        "time": ("Friday", "the end of the month", "next week", "our board meeting", "Q3"),
    },
    "zh": {
        "product": ("云桌面", "数据中台", "销售助手", "你们的系统", "CRM平台"),
        "competitor": ("纷享销客", "销售易", "Salesforce", "HubSpot", "钉钉"),
        "feature": ("单点登录", "自定义报表", "移动端", "数据导出", "审批流"),
        "system": ("ERP", "财务系统", "数据仓库", "企业微信", "工单系统"),
        "qty": ("20", "50", "100", "两百", "几百"),
        "time": ("周五", "月底", "下周", "董事会", "三季度"),
    },
}

# The clause that carries the intent; the later ones of each borrow another intent's words.
INTENT_TEMPLATES = {
    "en": {
        "technical_consultation": (
            "Does {product} support {feature}?",
            "How do I configure {feature} in {product}?",
            "Can {product} integrate with our {system}?",
            "Is there a limit on how many users {product} can handle at once?",
            "What are the requirements for running {product} on our own servers?",
            "Is there an API to pull data out of {product} into our {system}?",
            "Quick question: can {feature} be restricted by team?",
            "Can we import our contacts from {competitor} into {product}?",
            "Is the API rate limit the same on the cheaper plan?",
            "Before we talk price: does {product} run on-premise?",
            "Does {feature} work offline?",
            "We still use {competitor} for email, can {product} sync with it?",
        ),
        "quote_request": (
            "Could you send us a quote for {qty} licenses of {product}?",
            "Please share pricing for {qty} seats.",
            "What would {qty} users cost us per year?",
            "We would like a formal proposal with a volume discount.",
            "Can you prepare an offer for {product} before {time}?",
            "Budget is approved, please send the price list and payment terms.",
            "How much is the annual plan if we commit to {qty} accounts?",
            "What would {feature} add to the cost?",
            "{competitor} quoted us less, what is your best price for {qty} seats?",
            "Need numbers for {time}: {qty} users, with support included.",
            "Does the enterprise plan include {feature}, and at what price?",
        ),
        "competitor_comparison": (
            "How does {product} compare to {competitor}?",
            "{competitor} offered us a similar package, why should we choose you?",
            "We are also talking to {competitor}, what makes {product} better?",
            "Is {product} faster than {competitor} for {feature}?",
            "Our team uses {competitor} today; what would we gain by switching?",
            "What can you do that {competitor} cannot?",
            "{competitor} is cheaper, why should we pay more for {product}?",
            "Is your support better than {competitor}'s? Theirs was slow.",
            "Does {product} integrate with our {system} as well as {competitor} does?",
            "We got a lower quote from {competitor}; what do we get with you that they lack?",
        ),
        "after_sales_support": (
            "Our {product} stopped working after the last update.",
            "The {feature} module keeps crashing since yesterday.",
            "One unit in the order arrived damaged, how do we get a replacement?",
            "I need help resetting the admin password for {product}.",
            "The invoice for our last order is wrong, please correct it.",
            "Our order still has not arrived, when will it be delivered?",
            "Since the upgrade {feature} shows an error for every user.",
            "We were billed the wrong price on the last invoice.",
            "The quote you sent does not match what we were charged.",
            "Since we moved over from {competitor} the data import keeps failing.",
            "The integration with our {system} is down since this morning.",
            "Support ticket still open after a week, {feature} is unusable.",
        ),
    },
    "zh": {
        "technical_consultation": (
            "{product}支持{feature}吗？",
            "请问{product}里的{feature}怎么配置？",
            "{product}能和我们的{system}对接吗？",
            "{product}最多支持多少用户同时在线？",
            "本地部署{product}需要什么服务器配置？",
            "有没有接口可以把{product}的数据导到{system}？",
            "想咨询一下，{feature}能按部门设置权限吗？",
            "能把{competitor}里的客户数据导入{product}吗？",
            "便宜的版本也有API接口吗？",
            "先不谈价格，{product}支持本地部署吗？",
            "这个feature能不能按role设置权限？",
            "我们邮件还在用{competitor}，{product}能同步吗？",
        ),
        "quote_request": (
            "麻烦发一份{qty}套{product}的报价。",
            "{qty}个账号一年多少钱？",
            "请给我们出一个正式报价单，最好有批量折扣。",
            "能在{time}之前给个{product}的方案和价格吗？",
            "预算已经批了，请把价格表和付款方式发给我。",
            "如果签{qty}个账号，年费是多少？",
            "加上{feature}要多加多少钱？",
            "{competitor}报价比你们低，{qty}个账号最低多少？",
            "能给个quote吗？{qty}个seat。",
            "{time}要用数字：{qty}个用户，含售后服务。",
            "企业版包含{feature}吗？价格多少？",
        ),
        "competitor_comparison": (
            "{product}和{competitor}比有什么优势？",
            "{competitor}给我们的方案差不多，为什么选你们？",
            "我们也在和{competitor}谈，你们的{product}好在哪里？",
            "{feature}方面{product}比{competitor}强吗？",
            "我们现在用的是{competitor}，换成你们有什么好处？",
            "你们有哪些功能是{competitor}没有的？",
            "{competitor}更便宜，凭什么多付钱给你们？",
            "你们的售后和{competitor}比怎么样？他们响应很慢。",
            "和{system}的对接，你们做得比{competitor}好吗？",
            "{competitor}给的报价更低，你们有什么他们没有的？",
        ),
        "after_sales_support": (
            "{product}升级之后就打不开了。",
            "{feature}模块从昨天开始一直报错。",
            "收到的货有一台是坏的，怎么换货？",
            "请帮我重置{product}的管理员密码。",
            "上次订单的发票开错了，麻烦更正。",
            "我们的订单还没到，什么时候能送到？",
            "升级以后所有人打开{feature}都提示错误。",
            "上次发票上的价格开错了。",
            "报价单和实际扣款金额对不上。",
            "从{competitor}迁移过来以后数据导入一直失败。",
            "和{system}的对接从早上开始就断了。",
            "工单提了一周还没解决，{feature}根本用不了。",
        ),
    },
}

# One-line chat messages: the intent in a few words, the mood (if any) in an emoji or a word.
SHORT_TEMPLATES = {
    "en": {
        "technical_consultation": (
            "API docs?",
            "does it do {feature}?",
            "SSO supported?",
            "how to export data?",
            "works with {system}?",
        ),  # fmt: skip
        "quote_request": (
            "price?",
            "quote for {qty} seats pls",
            "how much?",
            "any discount?",
            "cost for {qty} users?",
        ),  # fmt: skip
        "competitor_comparison": (
            "vs {competitor}?",
            "why not {competitor}?",
            "better than {competitor}?",
            "{competitor} does this, do you?",
        ),  # fmt: skip
        "after_sales_support": (
            "still broken",
            "login not working",
            "order not here yet",
            "app crashed again",
            "invoice wrong",
        ),  # fmt: skip
    },
    "zh": {
        "technical_consultation": (
            "有API吗？",
            "支持{feature}吗",
            "怎么导出数据？",
            "能对接{system}吗",
            "SSO能用吗",
        ),  # fmt: skip
        "quote_request": ("多少钱？", "报个价", "{qty}个账号什么价", "有折扣吗", "price多少"),
        "competitor_comparison": (
            "和{competitor}比呢？",
            "为啥不用{competitor}",
            "比{competitor}好吗",
            "{competitor}有这个功能，你们呢",
        ),  # fmt: skip
        "after_sales_support": ("还是打不开", "登录不了", "货还没到", "又崩了", "发票开错了"),
    },
}
SHORT_MOOD = {
    "en": {
        "satisfied": ("thx!", "thanks", "great", "cheers"),
        "complaining": ("asap!!", "ridiculous", "seriously?!", "again??"),
        "hesitant": ("no rush", "just wondering", "maybe later", "not sure yet"),
    },
    "zh": {
        "satisfied": ("谢谢！", "辛苦啦", "好的", "感谢"),
        "complaining": ("急！！", "太离谱了", "搞什么", "又这样？？"),
        "hesitant": ("不急", "随便问问", "再看看", "还没定"),
    },
}
EMOJI = {
    "satisfied": ("🙂", "👍", "😊", "🙏"),
    "complaining": ("😡", "🙄", "😤", "👎"),
    "hesitant": ("🤔", "😕", "🤷"),
}

# Clauses that mention another intent's words without carrying it: what fools a keyword rule.
DISTRACTORS = {
    "en": (
        "The price was fine when we signed.",
        "We moved over from {competitor} last year.",
        "Last quarter's quote is attached for reference.",
        "Delivery has always been on time so far.",
        "We compared a few vendors before buying.",
        "Our {system} team is copied here.",
    ),
    "zh": (
        "当初签约时价格还可以。",
        "我们去年从{competitor}换过来的。",
        "附件是上季度的报价，供参考。",
        "之前的发货一直很准时。",
        "买之前我们比较过几家供应商。",
        "{system}那边的同事也在抄送里。",
    ),
}

# The later ones of each are hedged, mixed or sarcastic: the other mood's words in them.
SENTIMENT_TEMPLATES = {
    "en": {
        "satisfied": (
            "Thanks, your team has been great.",
            "We are very happy with the service so far.",
            "Great job on the onboarding!",
            "Really appreciate the quick help.",
            "Everything else works nicely, thank you.",
            "Not bad at all, the team sorted the last issue quickly.",
            "No complaints so far, just one question.",
            "Mostly happy, only this one thing.",
            "Honestly better than our last vendor.",
        ),
        "complaining": (
            "This is really frustrating.",
            "Honestly this is unacceptable.",
            "We are very disappointed with the support.",
            "Third time I am writing about this and nobody answers!",
            "This is costing us customers, fix it now.",
            "Great, another outage. Thanks for nothing.",
            "We were happy with you until this week, not anymore.",
            "Your sales rep promised this would work, it does not.",
            "Not happy. At all.",
        ),
        "hesitant": (
            "We are not sure yet.",
            "Still thinking it over, maybe next quarter.",
            "I am not certain this is the right fit for us.",
            "We might wait a bit before deciding.",
            "Let me check internally first, no promises.",
            "Looks good on paper, but we need to think.",
            "Happy with the demo, but the budget is not settled.",
            "Not sure it is worth it yet.",
            "Maybe. Depends on the price.",
        ),
    },
    "zh": {
        "satisfied": (
            "谢谢，你们团队很专业。",
            "目前对服务非常满意。",
            "上线很顺利，辛苦了！",
            "感谢快速响应。",
            "其他功能都很好用，谢谢。",
            "还不错，上次的问题解决得挺快。",
            "目前没什么问题，就是想问一下。",
            "总体满意，就这一个小问题。",
            "比之前那家好用多了。",
        ),
        "complaining": (
            "真的太让人失望了。",
            "这完全不能接受。",
            "客服一直不回复，很生气。",
            "已经第三次反馈了，还没人处理！",
            "已经影响到我们的客户了，请马上解决。",
            "又出问题了，真是服了。",
            "本来挺满意的，这周真的不行了。",
            "销售说好的功能根本用不了。",
            "很不满意！",
        ),
        "hesitant": (
            "我们还在考虑。",
            "可能要等下个季度再说。",
            "不太确定是否适合我们。",
            "我们再观望一下。",
            "我先内部商量一下，不一定。",
            "看起来不错，但我们还要再想想。",
            "演示挺好的，不过预算还没定。",
            "不确定值不值。",
            "再说吧，看价格。",
        ),
    },
}

OPENERS = {
    "en": ("", "", "Hi,", "Hello team,", "Dear support,", "Hey,", "Good morning,"),
    "zh": ("", "", "你好，", "您好，", "在吗？", "王经理好，", "Hi，"),
}
CLOSERS = {
    "en": ("", "", "Thanks.", "Regards, {name}", "Best,", "Cheers"),
    "zh": ("", "", "谢谢。", "麻烦了。", "盼复。", "thx"),
}
# English words Chinese writers put in their text (code-switching), swapped in now and then.
CODE_SWITCH = (
    ("报价", "quote"), ("价格", "price"), ("接口", "API"), ("折扣", "discount"),
    ("发票", "invoice"), ("方案", "proposal"), ("功能", "feature"), ("演示", "demo"),
)  # fmt: skip
CALL_NOTE = {"en": "Call note: customer said ", "zh": "电话记录：客户表示"}
NAMES = ("Anna", "Ben", "Chloe", "David", "Emma", "Li Wei", "Zhang Min")
# How often each sentiment goes with each intent (rows: INTENTS, columns: SENTIMENTS).
SENTIMENT_GIVEN_INTENT = np.array(
    [
        [0.40, 0.20, 0.40],
        [0.45, 0.10, 0.45],
        [0.20, 0.15, 0.65],
        [0.15, 0.70, 0.15],
    ]
)
SHORT_SHARE = 0.15  # one-line chat messages, of those on chat and WeChat: twice this
LABEL_NOISE = 0.03  # of the intent labels, and of the sentiment labels, are another class
TYPO_RATE = {"en": 0.025, "zh": 0.012}
ROLLS = 7 + 10 + 1 + len(CODE_SWITCH) + 1  # the most uniforms one message reads


def _typos(text: str, rng: np.random.Generator, rate: float) -> str:
    """Swap, drop or double a character here and there, as people type on a phone."""
    rolls = rng.random(len(text))
    out, done = [], 0
    # Only the few characters hit are visited: a loop over every character was most of the time.
    for i in np.flatnonzero(rolls < rate).tolist():
        if i < done:
            continue  # the second of a swapped pair
        out.append(text[done:i])
        if rolls[i] < rate / 3 and i + 1 < len(text):
            out.append(text[i + 1] + text[i])
            done = i + 2
            continue
        if rolls[i] >= 2 * rate / 3:
            out.append(text[i] * 2)
        done = i + 1  # else dropped
    out.append(text[done:])
    return "".join(out)


def compose(
    language: str, intent: str, sentiment: str, channel: str, rng: np.random.Generator
) -> str:
    """One message: a one-line chat message now and then; else opener, the intent clause, maybe a
    distractor, the sentiment, a closer; then emoji, code-switching and typos."""
    # One draw of uniforms per message, read in turn: a generator call per choice was most of
    # the time.
    rolls = iter(rng.random(ROLLS).tolist())
    slots = {k: v[int(next(rolls) * len(v))] for k, v in SLOTS[language].items()}
    slots["name"] = NAMES[int(next(rolls) * len(NAMES))]

    def pick(options: tuple[str, ...]) -> str:
        return options[int(next(rolls) * len(options))].format(**slots)

    chatty = channel in ("chat", "wechat")
    sep = "" if language == "zh" else " "
    if channel != "call_note" and next(rolls) < SHORT_SHARE * (2 if chatty else 1):
        body, cue = pick(SHORT_TEMPLATES[language][intent]), next(rolls)
        if cue < 0.35:  # an emoji, now and then one of another mood
            mood = (
                sentiment if next(rolls) < 0.85 else SENTIMENTS[int(next(rolls) * len(SENTIMENTS))]
            )
            body += pick(EMOJI[mood])
        elif cue < 0.75:
            body = sep.join([body, pick(SHORT_MOOD[language][sentiment])])
        # else the mood is not in the text at all, as in many real one-liners
    else:
        parts = [
            pick(INTENT_TEMPLATES[language][intent]),
            pick(SENTIMENT_TEMPLATES[language][sentiment]),
        ]
        if next(rolls) < 0.5:
            parts.reverse()  # the feeling first, then the ask
        if next(rolls) < 0.35:
            parts.insert(int(next(rolls) * (len(parts) + 1)), pick(DISTRACTORS[language]))
        body = sep.join(parts)
        if channel == "call_note":
            body = CALL_NOTE[language] + (body[0].lower() + body[1:] if language == "en" else body)
        else:
            body = sep.join(p for p in (pick(OPENERS[language]), body, pick(CLOSERS[language])) if p)  # fmt: skip
        if chatty and next(rolls) < 0.3:
            body += pick(EMOJI[sentiment])
    if language == "zh" and next(rolls) < 0.3:
        for word, english in CODE_SWITCH:
            if word in body and next(rolls) < 0.6:
                body = body.replace(word, english)
    body = _typos(body, rng, TYPO_RATE[language])
    if language == "en" and chatty and next(rolls) < 0.3:
        body = body.lower()
    return body


def message_frame(
    n: int,
    rng: np.random.Generator,
    start: datetime,
    end: datetime,
    contact_ids: np.ndarray | None = None,
    zh_share: float = 0.5,
    channel: str | None = None,
) -> pd.DataFrame:
    """``n`` inbound messages between ``start`` and ``end``, oldest first, before their text:
    ``[contact_id,] channel, direction, sent_at, language``."""
    languages = np.where(rng.random(n) < zh_share, "zh", "en")
    channels = rng.choice(CHANNELS, size=n, p=[0.3, 0.2, 0.2, 0.15, 0.15])
    if channel is not None:
        channels[:] = channel
    span = (end - start).total_seconds()
    sent_at = pd.Timestamp(start) + pd.to_timedelta(np.sort(rng.random(n)) * span, unit="s")
    frame = pd.DataFrame(
        {
            "channel": channels,
            "direction": "inbound",
            "sent_at": sent_at.floor("s"),
            "language": languages,
        }
    )
    if contact_ids is not None:
        frame.insert(0, "contact_id", rng.choice(contact_ids, size=n))
    return frame


def _draw(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    """One category per row of ``p`` (rows of weights, normalised here)."""
    cumulative = np.cumsum(p, axis=1)
    return (rng.random(len(p))[:, None] * cumulative[:, -1:] > cumulative).sum(axis=1)


def _noisy(rng: np.random.Generator, codes: np.ndarray, k: int, rate: float) -> np.ndarray:
    """``codes`` with a ``rate`` share moved to another of the ``k`` classes at random."""
    flip = rng.random(len(codes)) < rate
    return np.where(flip, (codes + rng.integers(1, k, len(codes))) % k, codes)


def write_messages(
    frame: pd.DataFrame,
    rng: np.random.Generator,
    intent_weight: np.ndarray | None = None,
    sentiment_weight: np.ndarray | None = None,
    label_noise: float = LABEL_NOISE,
) -> pd.DataFrame:
    """``frame`` (``message_frame``'s) with ``text, intent, sentiment``: intents drawn evenly and
    sentiments by ``SENTIMENT_GIVEN_INTENT``, each times its per-row weight when given (rows of
    ``len(INTENTS)`` / ``len(SENTIMENTS)`` factors); ``label_noise`` of each label is another
    class than the one the text was written for."""
    n = len(frame)
    p_intent = np.ones((n, len(INTENTS))) if intent_weight is None else np.asarray(intent_weight, dtype=float)  # fmt: skip
    intents = _draw(rng, p_intent)
    p_sentiment = SENTIMENT_GIVEN_INTENT[intents]
    if sentiment_weight is not None:
        p_sentiment = p_sentiment * np.asarray(sentiment_weight, dtype=float)
    sentiments = _draw(rng, p_sentiment)
    texts = [
        compose(lang, INTENTS[i], SENTIMENTS[s], ch, rng)
        for lang, i, s, ch in zip(
            frame["language"].tolist(), intents, sentiments, frame["channel"].tolist(), strict=True
        )
    ]
    intents = _noisy(rng, intents, len(INTENTS), label_noise)
    sentiments = _noisy(rng, sentiments, len(SENTIMENTS), label_noise)
    return frame.assign(
        text=texts,
        intent=np.asarray(INTENTS)[intents],
        sentiment=np.asarray(SENTIMENTS)[sentiments],
    )


def generate_messages(
    n: int,
    seed: int,
    start: datetime,
    end: datetime,
    contact_ids: np.ndarray | None = None,
    zh_share: float = 0.5,
    channel: str | None = None,
) -> pd.DataFrame:
    """``n`` inbound messages between ``start`` and ``end``, oldest first, with the ground truth:
    ``[contact_id,] channel, direction, sent_at, language, text, intent, sentiment``; all on
    ``channel`` if given (a ticket's body), else on channels drawn at random."""
    rng = np.random.default_rng(seed)
    frame = message_frame(n, rng, start, end, contact_ids, zh_share, channel)
    return write_messages(frame, rng)
