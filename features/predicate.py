"""The ``where=`` of an aggregation: a small SQL boolean grammar, parsed once, run in two engines.

Flink evaluates a view's filters in the job (``COUNT(*) FILTER (WHERE ...)``);
offline point-in-time reads evaluate the same filters over the raw archive
with Arrow, for the head of a window. Two engines may only share a filter if
they agree on its meaning, so ``where=`` is limited to what both evaluate the
same way, with SQL's three-valued logic:

- an event field (``device``, or back-quoted ``\\`device\\```), a string
  (``'click'``, ``''`` for a quote), an integer or decimal number, TRUE, FALSE;
- comparisons ``= <> < <= > >=`` between them (Flink's SQL has no ``!=``);
- ``x IS [NOT] NULL``, ``x [NOT] IN (literal, ...)``;
- ``NOT``, ``AND``, ``OR`` and parentheses; a boolean field on its own.

Anything else is refused when the view is defined, naming the part to change.
An event counts when the filter is TRUE: NULL counts as not selected, in both
engines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from parity.errors import DefinitionError

if TYPE_CHECKING:
    import pyarrow as pa

_TOKEN = re.compile(
    r"\s*(?:"
    r"(?P<string>'(?:[^']|'')*')"
    r"|(?P<number>-?\d+(?:\.\d+)?)"
    r"|(?P<quoted>`[^`]+`)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op><>|<=|>=|=|<|>)"
    r"|(?P<punct>[(),])"
    r")"
)
_KEYWORDS = {"AND", "OR", "NOT", "IS", "NULL", "IN", "TRUE", "FALSE"}

Literal = str | int | float | bool


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Const:
    value: Literal


@dataclass(frozen=True)
class Compare:
    op: str
    left: Field | Const
    right: Field | Const


@dataclass(frozen=True)
class IsNull:
    operand: Field
    negated: bool


@dataclass(frozen=True)
class In:
    operand: Field
    values: tuple[Literal, ...]
    negated: bool


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class Bool:
    op: str  # AND or OR
    left: Expr
    right: Expr


Expr = Compare | IsNull | In | Not | Bool | Field | Const


def parse(text: str) -> Expr:
    """The filter's syntax tree.

    Raises:
        DefinitionError: a part of ``text`` outside the grammar, named with its position.
    """
    return _Parser(text).parse()


def fields(expr: Expr) -> set[str]:
    """The event fields a filter reads."""
    if isinstance(expr, Field):
        return {expr.name}
    if isinstance(expr, Const):
        return set()
    if isinstance(expr, Compare):
        return fields(expr.left) | fields(expr.right)
    if isinstance(expr, IsNull | In):
        return {expr.operand.name}
    if isinstance(expr, Not):
        return fields(expr.operand)
    return fields(expr.left) | fields(expr.right)


def evaluate(expr: Expr, table: pa.Table) -> pa.Array:
    """Which rows of ``table`` the filter selects: a boolean array, NULL turned to False.

    Raises:
        DefinitionError: the filter names a field the table lacks, or compares
            values Arrow cannot compare (a string with a number).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = sorted(fields(expr) - set(table.column_names))
    if missing:
        raise DefinitionError(
            f"where= names {missing}, which the events do not have (fields: {sorted(table.column_names)})"
        )
    try:
        result = _arrow(expr, table)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DefinitionError(f"where= cannot be evaluated over the events' types: {exc}") from exc
    if isinstance(result, pa.Scalar):
        result = pa.array([result.as_py()] * table.num_rows, pa.bool_())
    if not pa.types.is_boolean(result.type):
        raise DefinitionError(f"where= gives {result.type}, not a boolean")
    return pc.fill_null(result, False)


def _arrow(expr: Expr, table: pa.Table) -> pa.Array | pa.Scalar:
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(expr, Field):
        return table.column(expr.name)
    if isinstance(expr, Const):
        return pa.scalar(expr.value)
    if isinstance(expr, Compare):
        name = {
            "=": "equal",
            "<>": "not_equal",
            "<": "less",
            "<=": "less_equal",
            ">": "greater",
            ">=": "greater_equal",
        }
        return pc.call_function(name[expr.op], [_arrow(expr.left, table), _arrow(expr.right, table)])
    if isinstance(expr, IsNull):
        column = table.column(expr.operand.name)
        return pc.is_valid(column) if expr.negated else pc.is_null(column)
    if isinstance(expr, In):
        column = table.column(expr.operand.name)
        found = pc.is_in(column, value_set=pa.array(list(expr.values)))
        if expr.negated:
            found = pc.invert(found)
        # SQL: NULL IN (...) is NULL, not FALSE.
        return pc.if_else(pc.is_null(column), pa.scalar(None, pa.bool_()), found)
    if isinstance(expr, Not):
        return pc.invert(_arrow(expr.operand, table))
    left, right = _arrow(expr.left, table), _arrow(expr.right, table)
    return pc.and_kleene(left, right) if expr.op == "AND" else pc.or_kleene(left, right)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        position = 0
        while position < len(text):
            if text[position:].strip() == "":
                break
            match = _TOKEN.match(text, position)
            if match is None or match.lastgroup is None:
                bang = text[position:].lstrip().startswith("!=")
                self._fail(position, "is not part of the filter grammar" + ("; use <>" if bang else ""))
            value = match.group(match.lastgroup)
            kind = match.lastgroup
            if kind == "word" and value.upper() in _KEYWORDS:
                kind, value = "keyword", value.upper()
            self.tokens.append((kind, value, match.start(match.lastgroup)))
            position = match.end()
        self.index = 0

    def parse(self) -> Expr:
        if not self.tokens:
            raise DefinitionError("where= is empty: give a SQL boolean expression, e.g. event_type = 'click'")
        expr = self._or()
        if self.index < len(self.tokens):
            self._fail(self.tokens[self.index][2], "was not expected here")
        return expr

    def _fail(self, position: int, why: str) -> NoReturn:
        raise DefinitionError(
            f"where= {self.text!r}: {self.text[position : position + 20]!r} (at {position}) {why}. "
            "A filter may use event fields, literals, = <> < <= > >=, IS [NOT] NULL, "
            "[NOT] IN (...), NOT, AND, OR and parentheses (features/predicate.py)."
        )

    def _peek(self, kind: str, value: str | None = None) -> bool:
        if self.index >= len(self.tokens):
            return False
        token_kind, token_value, _ = self.tokens[self.index]
        return token_kind == kind and (value is None or token_value == value)

    def _take(self, kind: str, value: str | None = None) -> str:
        if not self._peek(kind, value):
            at = self.tokens[self.index][2] if self.index < len(self.tokens) else len(self.text)
            self._fail(at, f"is where {value or kind} was expected")
        token = self.tokens[self.index][1]
        self.index += 1
        return token

    def _or(self) -> Expr:
        expr = self._and()
        while self._peek("keyword", "OR"):
            self.index += 1
            expr = Bool("OR", expr, self._and())
        return expr

    def _and(self) -> Expr:
        expr = self._not()
        while self._peek("keyword", "AND"):
            self.index += 1
            expr = Bool("AND", expr, self._not())
        return expr

    def _not(self) -> Expr:
        if self._peek("keyword", "NOT"):
            self.index += 1
            return Not(self._not())
        return self._predicate()

    def _predicate(self) -> Expr:
        if self._peek("punct", "("):
            self.index += 1
            expr = self._or()
            self._take("punct", ")")
            return expr
        left = self._operand()
        if self._peek("op"):
            op = self._take("op")
            return Compare(op, left, self._operand())
        if self._peek("keyword", "IS"):
            self.index += 1
            negated = self._peek("keyword", "NOT")
            self.index += negated
            self._take("keyword", "NULL")
            return IsNull(self._field(left), negated)
        negated = self._peek("keyword", "NOT")
        if negated or self._peek("keyword", "IN"):
            self.index += negated
            self._take("keyword", "IN")
            self._take("punct", "(")
            values = [self._literal()]
            while self._peek("punct", ","):
                self.index += 1
                values.append(self._literal())
            self._take("punct", ")")
            return In(self._field(left), tuple(values), negated)
        return left

    def _field(self, operand: Field | Const) -> Field:
        if not isinstance(operand, Field):
            self._fail(self.tokens[self.index - 1][2], "needs an event field on its left")
        return operand

    def _operand(self) -> Field | Const:
        if self._peek("word"):
            return Field(self._take("word"))
        if self._peek("quoted"):
            return Field(self._take("quoted")[1:-1])
        return Const(self._literal())

    def _literal(self) -> Literal:
        if self._peek("string"):
            return self._take("string")[1:-1].replace("''", "'")
        if self._peek("number"):
            text = self._take("number")
            return float(text) if "." in text else int(text)
        if self._peek("keyword", "TRUE") or self._peek("keyword", "FALSE"):
            return self._take("keyword") == "TRUE"
        at = self.tokens[self.index][2] if self.index < len(self.tokens) else len(self.text)
        self._fail(at, "is where a field or a literal was expected")
