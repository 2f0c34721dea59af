"""Bilingual (English, Chinese) customer messages for the demo CRM, with their intent and sentiment
known: templates from the domain's phrases, filled with products, competitors and features, mixed
with clauses that mention another intent's words (a price in a support request, a competitor in a
technical question), and typed with noise (typos, dropped characters, casing, filler). The labels
are the template's, so a model is scored against ground truth, and a keyword rule is misled as it
would be on real text.
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

# The clause that carries the intent.
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
        ),
        "quote_request": (
            "Could you send us a quote for {qty} licenses of {product}?",
            "Please share pricing for {qty} seats.",
            "What would {qty} users cost us per year?",
            "We would like a formal proposal with a volume discount.",
            "Can you prepare an offer for {product} before {time}?",
            "Budget is approved, please send the price list and payment terms.",
            "How much is the annual plan if we commit to {qty} accounts?",
        ),
        "competitor_comparison": (
            "How does {product} compare to {competitor}?",
            "{competitor} offered us a similar package, why should we choose you?",
            "We are also talking to {competitor}, what makes {product} better?",
            "Is {product} faster than {competitor} for {feature}?",
            "Our team uses {competitor} today; what would we gain by switching?",
            "What can you do that {competitor} cannot?",
        ),
        "after_sales_support": (
            "Our {product} stopped working after the last update.",
            "The {feature} module keeps crashing since yesterday.",
            "One unit in the order arrived damaged, how do we get a replacement?",
            "I need help resetting the admin password for {product}.",
            "The invoice for our last order is wrong, please correct it.",
            "Our order still has not arrived, when will it be delivered?",
            "Since the upgrade {feature} shows an error for every user.",
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
        ),
        "quote_request": (
            "麻烦发一份{qty}套{product}的报价。",
            "{qty}个账号一年多少钱？",
            "请给我们出一个正式报价单，最好有批量折扣。",
            "能在{time}之前给个{product}的方案和价格吗？",
            "预算已经批了，请把价格表和付款方式发给我。",
            "如果签{qty}个账号，年费是多少？",
        ),
        "competitor_comparison": (
            "{product}和{competitor}比有什么优势？",
            "{competitor}给我们的方案差不多，为什么选你们？",
            "我们也在和{competitor}谈，你们的{product}好在哪里？",
            "{feature}方面{product}比{competitor}强吗？",
            "我们现在用的是{competitor}，换成你们有什么好处？",
            "你们有哪些功能是{competitor}没有的？",
        ),
        "after_sales_support": (
            "{product}升级之后就打不开了。",
            "{feature}模块从昨天开始一直报错。",
            "收到的货有一台是坏的，怎么换货？",
            "请帮我重置{product}的管理员密码。",
            "上次订单的发票开错了，麻烦更正。",
            "我们的订单还没到，什么时候能送到？",
            "升级以后所有人打开{feature}都提示错误。",
        ),
    },
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

SENTIMENT_TEMPLATES = {
    "en": {
        "satisfied": (
            "Thanks, your team has been great.",
            "We are very happy with the service so far.",
            "Great job on the onboarding!",
            "Really appreciate the quick help.",
            "Everything else works nicely, thank you.",
        ),
        "complaining": (
            "This is really frustrating.",
            "Honestly this is unacceptable.",
            "We are very disappointed with the support.",
            "Third time I am writing about this and nobody answers!",
            "This is costing us customers, fix it now.",
        ),
        "hesitant": (
            "We are not sure yet.",
            "Still thinking it over, maybe next quarter.",
            "I am not certain this is the right fit for us.",
            "We might wait a bit before deciding.",
            "Let me check internally first, no promises.",
        ),
    },
    "zh": {
        "satisfied": (
            "谢谢，你们团队很专业。",
            "目前对服务非常满意。",
            "上线很顺利，辛苦了！",
            "感谢快速响应。",
            "其他功能都很好用，谢谢。",
        ),
        "complaining": (
            "真的太让人失望了。",
            "这完全不能接受。",
            "客服一直不回复，很生气。",
            "已经第三次反馈了，还没人处理！",
            "已经影响到我们的客户了，请马上解决。",
        ),
        "hesitant": (
            "我们还在考虑。",
            "可能要等下个季度再说。",
            "不太确定是否适合我们。",
            "我们再观望一下。",
            "我先内部商量一下，不一定。",
        ),
    },
}

OPENERS = {
    "en": ("", "", "Hi,", "Hello team,", "Dear support,", "Hey,", "Good morning,"),
    "zh": ("", "", "你好，", "您好，", "在吗？", "王经理好，"),
}
CLOSERS = {
    "en": ("", "", "Thanks.", "Regards, {name}", "Best,", "Cheers"),
    "zh": ("", "", "谢谢。", "麻烦了。", "盼复。"),
}
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
    """One message: opener, the intent clause, maybe a distractor, the sentiment, a closer."""
    slots = {k: v[rng.integers(len(v))] for k, v in SLOTS[language].items()}
    slots["name"] = NAMES[rng.integers(len(NAMES))]

    def pick(options: tuple[str, ...]) -> str:
        return options[rng.integers(len(options))].format(**slots)

    parts = [
        pick(INTENT_TEMPLATES[language][intent]),
        pick(SENTIMENT_TEMPLATES[language][sentiment]),
    ]
    if rng.random() < 0.5:
        parts.reverse()  # the feeling first, then the ask
    if rng.random() < 0.35:
        parts.insert(int(rng.integers(len(parts) + 1)), pick(DISTRACTORS[language]))
    sep = "" if language == "zh" else " "
    body = sep.join(parts)
    if channel == "call_note":
        body = CALL_NOTE[language] + (body[0].lower() + body[1:] if language == "en" else body)
    else:
        body = sep.join(p for p in (pick(OPENERS[language]), body, pick(CLOSERS[language])) if p)
    body = _typos(body, rng, 0.02 if language == "en" else 0.01)
    if language == "en" and channel in ("chat", "wechat") and rng.random() < 0.3:
        body = body.lower()
    return body


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
    ``contact_id, channel, direction, sent_at, language, text, intent, sentiment``; all on
    ``channel`` if given (a ticket's body), else on channels drawn at random."""
    rng = np.random.default_rng(seed)
    languages = np.where(rng.random(n) < zh_share, "zh", "en")
    intents = rng.integers(len(INTENTS), size=n)
    cumulative = SENTIMENT_GIVEN_INTENT.cumsum(axis=1)[intents]
    sentiments = (rng.random(n)[:, None] > cumulative).sum(axis=1)
    channels = rng.choice(CHANNELS, size=n, p=[0.3, 0.2, 0.2, 0.15, 0.15])
    if channel is not None:
        channels[:] = channel
    span = (end - start).total_seconds()
    sent_at = pd.Timestamp(start) + pd.to_timedelta(np.sort(rng.random(n)) * span, unit="s")
    texts = [
        compose(lang, INTENTS[i], SENTIMENTS[s], ch, rng)
        for lang, i, s, ch in zip(languages, intents, sentiments, channels, strict=True)
    ]
    frame = pd.DataFrame(
        {
            "channel": channels,
            "direction": "inbound",
            "sent_at": sent_at.floor("s"),
            "language": languages,
            "text": texts,
            "intent": np.asarray(INTENTS)[intents],
            "sentiment": np.asarray(SENTIMENTS)[sentiments],
        }
    )
    if contact_ids is not None:
        frame.insert(0, "contact_id", rng.choice(contact_ids, size=n))
    return frame
