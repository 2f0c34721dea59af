"""Tag-rule conditions: ``column op value`` comparisons joined by ``and``/``or``, parsed by a tiny
parser (never ``eval``) and evaluated column-wise on a frame.

Grammar: ``comparison (("and" | "or") comparison)*``, ``and`` binding tighter than ``or``, no
parentheses. A comparison is ``column op number`` (ops ``>= > <= < == !=``; also ``true``/``false``
as 1/0) or ``column == 'text'`` / ``column != 'text'`` (single or double quotes). A blank value
(None, NaN) satisfies no comparison, ``!=`` included.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

OPS: dict[str, Callable] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_TOKEN = re.compile(
    r"\s*(?:(?P<op>>=|<=|==|!=|>|<)|(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|'(?P<sq>[^']*)'|\"(?P<dq>[^\"]*)\"|(?P<name>[A-Za-z_][A-Za-z0-9_]*))"
)


class ConditionError(ValueError):
    """A condition that does not parse; the message says where."""


@dataclass(frozen=True)
class Comparison:
    column: str
    op: str
    value: float | str

    def evaluate(self, frame: pd.DataFrame) -> np.ndarray:
        column = frame[self.column]
        if isinstance(self.value, str):
            values = column.astype(object).to_numpy()
            blank = pd.isna(values)
            equal = np.array([v == self.value for v in values], dtype=bool)
            return ~blank & (equal if self.op == "==" else ~equal)
        numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            return ~np.isnan(numbers) & OPS[self.op](numbers, self.value)


@dataclass(frozen=True)
class Condition:
    """``any`` of ``all`` of comparisons (``a and b or c`` = ``(a and b) or c``)."""

    text: str
    clauses: tuple[tuple[Comparison, ...], ...]

    @property
    def columns(self) -> list[str]:
        """The columns the condition reads, in order of first use."""
        return list(dict.fromkeys(c.column for clause in self.clauses for c in clause))

    def evaluate(self, frame: pd.DataFrame) -> np.ndarray:
        """One bool per row of ``frame``; a KeyError names a column the frame lacks."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise KeyError(missing[0])
        holds = [
            np.logical_and.reduce([c.evaluate(frame) for c in clause]) for clause in self.clauses
        ]
        return np.logical_or.reduce(holds)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while text[pos:].strip():
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ConditionError(f"cannot read {text[pos:].strip()!r} (at character {pos + 1})")
        kind = match.lastgroup
        value = match.group(kind)
        out.append(("text" if kind in ("sq", "dq") else kind, value))
        pos = match.end()
    return out


def parse_condition(text: str) -> Condition:
    """``text`` as a ``Condition``; a ``ConditionError`` says what is wrong."""
    tokens = _tokens(text)
    if not tokens:
        raise ConditionError("empty condition")
    clauses: list[tuple[Comparison, ...]] = []
    clause: list[Comparison] = []
    i = 0
    while True:
        part = tokens[i : i + 3]
        if len(part) < 3 or part[0][0] != "name" or part[1][0] != "op":
            shown = " ".join(v for _, v in tokens[i : i + 3]) or "the end"
            raise ConditionError(f"expected `column op value` at {shown!r}")
        (_, column), (_, op), (kind, raw) = part
        if column in ("and", "or"):
            raise ConditionError(f"expected a column name, got {column!r}")
        if kind == "number":
            value: float | str = float(raw)
        elif kind == "name" and raw in ("true", "false"):
            value = 1.0 if raw == "true" else 0.0
        elif kind == "text":
            if op not in ("==", "!="):
                raise ConditionError(f"{column} {op} {raw!r}: text compares only with == or !=")
            value = raw
        else:
            raise ConditionError(f"{column} {op} {raw}: expected a number or a 'quoted text'")
        clause.append(Comparison(column, op, value))
        i += 3
        if i == len(tokens):
            break
        joiner = tokens[i]
        if joiner not in (("name", "and"), ("name", "or")):
            raise ConditionError(
                f"expected `and` or `or` after {column} {op} {raw}, got {joiner[1]!r}"
            )
        if joiner[1] == "or":
            clauses.append(tuple(clause))
            clause = []
        i += 1
    clauses.append(tuple(clause))
    return Condition(text, tuple(clauses))
