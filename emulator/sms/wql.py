"""WQL: the query tree, the parser and name resolution (the subset SMS Provider clients send).

Grammar (keywords and identifiers are case-insensitive, as in WMI):

    query      := SELECT ( '*' | ident ( ',' ident )* ) FROM ident [ WHERE or_expr ]
    or_expr    := and_expr ( OR and_expr )*
    and_expr   := not_expr ( AND not_expr )*
    not_expr   := NOT not_expr | '(' or_expr ')' | predicate
    predicate  := operand op operand            op: = <> != < > <= >=
                | ident [ NOT ] LIKE string      % any run, _ one character, [abc] / [^abc] sets
                | ident IS [ NOT ] NULL
    operand    := ident | integer | string | TRUE | FALSE | NULL

One side of a comparison must be a property and the other a literal (WQL compares a property
with a constant). `= NULL` / `<> NULL` mean IS [NOT] NULL. Evaluation: emulator.sms.wql_eval.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, TypeAlias

__all__ = [
    "And",
    "Comparison",
    "Expr",
    "IsNull",
    "Like",
    "Not",
    "Or",
    "Query",
    "Value",
    "WqlError",
    "parse",
    "parse_int",
    "resolve",
]

Value: TypeAlias = int | str | bool | datetime | None
CompareOp = Literal["=", "<>", "<", ">", "<=", ">="]
ErrorKind = Literal["syntax", "unknown_property"]

_KEYWORDS: Final = frozenset({"SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "LIKE", "IS", "NULL", "TRUE", "FALSE"})
_SWAPPED: Final[dict[CompareOp, CompareOp]] = {"=": "=", "<>": "<>", "<": ">", ">": "<", "<=": ">=", ">=": "<="}
_TOKEN_RE: Final = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>-?(?:0[xX][0-9A-Fa-f]+|\d+)(?![A-Za-z0-9_]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><>|!=|<=|>=|=|<|>)
  | (?P<punct>[(),*])
  | (?P<quote>["'])
    """,
    re.VERBOSE,
)
_MAX_QUERY_CHARS: Final = 16_384  # WMI rejects far shorter queries; bounds the parser's work.
_MAX_NESTING: Final = 100


class WqlError(ValueError):
    """The query is not valid WQL for this provider (maps to WBEM_E_INVALID_QUERY)."""

    def __init__(self, message: str, *, kind: ErrorKind = "syntax", position: int | None = None) -> None:
        super().__init__(message if position is None else f"{message} (at character {position})")
        self.kind: ErrorKind = kind
        self.position = position


@dataclass(frozen=True, slots=True)
class Comparison:
    prop: str
    op: CompareOp
    value: int | str | bool


@dataclass(frozen=True, slots=True)
class Like:
    prop: str
    pattern: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class IsNull:
    prop: str
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Not:
    item: Expr


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]


Expr: TypeAlias = Comparison | Like | IsNull | Not | And | Or


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query. `properties` is None for `SELECT *`."""

    class_name: str
    properties: tuple[str, ...] | None
    where: Expr | None


# --------------------------------------------------------------------------- tokenizer


def parse_int(text: str) -> int:
    """A decimal or 0x-hexadecimal integer constant (leading zeros allowed, unlike int(x, 0))."""
    text = text.strip()
    return int(text, 16) if "x" in text.lower() else int(text, 10)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["ident", "keyword", "number", "string", "op", "punct", "eof"]
    text: str
    position: int
    value: int | str | None = None


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Read a quoted literal starting at the quote; returns (value, index after closing quote)."""
    quote = text[start]
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                break
            chars.append(text[i + 1])
            i += 2
        elif ch == quote:
            return "".join(chars), i + 1
        else:
            chars.append(ch)
            i += 1
    raise WqlError("unterminated string literal", position=start)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        match = _TOKEN_RE.match(text, i)
        if match is None:
            raise WqlError(f"unexpected character {text[i]!r}", position=i)
        kind = match.lastgroup
        lexeme = match.group()
        if kind == "quote":
            value, end = _read_string(text, i)
            tokens.append(_Token("string", text[i:end], i, value))
            i = end
            continue
        if kind == "number":
            tokens.append(_Token("number", lexeme, i, parse_int(lexeme)))
        elif kind == "ident":
            upper = lexeme.upper()
            tokens.append(
                _Token("keyword" if upper in _KEYWORDS else "ident", upper if upper in _KEYWORDS else lexeme, i)
            )
        elif kind == "op":
            tokens.append(_Token("op", "<>" if lexeme == "!=" else lexeme, i))
        elif kind == "punct":
            tokens.append(_Token("punct", lexeme, i))
        i = match.end()
    tokens.append(_Token("eof", "", len(text)))
    return tokens


# --------------------------------------------------------------------------- parser


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._index = 0
        self._depth = 0

    @property
    def _current(self) -> _Token:
        return self._tokens[self._index]

    def _advance(self) -> _Token:
        token = self._tokens[self._index]
        if token.kind != "eof":
            self._index += 1
        return token

    def _is(self, kind: str, text: str | None = None) -> bool:
        token = self._current
        return token.kind == kind and (text is None or token.text == text)

    def _expect(self, kind: str, text: str | None = None) -> _Token:
        if not self._is(kind, text):
            token = self._current
            wanted = text or kind
            found = token.text or "end of query"
            raise WqlError(f"expected {wanted}, found {found!r}", position=token.position)
        return self._advance()

    def query(self) -> Query:
        self._expect("keyword", "SELECT")
        properties: tuple[str, ...] | None
        if self._is("punct", "*"):
            self._advance()
            properties = None
        else:
            names = [self._expect("ident").text]
            while self._is("punct", ","):
                self._advance()
                names.append(self._expect("ident").text)
            properties = tuple(names)
        self._expect("keyword", "FROM")
        class_name = self._expect("ident").text
        where: Expr | None = None
        if self._is("keyword", "WHERE"):
            self._advance()
            where = self._or()
        self._expect("eof")
        return Query(class_name=class_name, properties=properties, where=where)

    def _or(self) -> Expr:
        items = [self._and()]
        while self._is("keyword", "OR"):
            self._advance()
            items.append(self._and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def _and(self) -> Expr:
        items = [self._not()]
        while self._is("keyword", "AND"):
            self._advance()
            items.append(self._not())
        return items[0] if len(items) == 1 else And(tuple(items))

    def _not(self) -> Expr:
        self._depth += 1
        if self._depth > _MAX_NESTING:
            raise WqlError("condition nested too deeply", position=self._current.position)
        try:
            if self._is("keyword", "NOT"):
                self._advance()
                return Not(self._not())
            if self._is("punct", "("):
                self._advance()
                inner = self._or()
                self._expect("punct", ")")
                return inner
            return self._predicate()
        finally:
            self._depth -= 1

    def _operand(self) -> tuple[Literal["prop", "literal"], int | str | bool | None, int]:
        token = self._current
        if token.kind == "ident":
            self._advance()
            return "prop", token.text, token.position
        if token.kind in ("number", "string"):
            self._advance()
            return "literal", token.value, token.position
        if token.kind == "keyword" and token.text in ("TRUE", "FALSE", "NULL"):
            self._advance()
            return "literal", {"TRUE": True, "FALSE": False, "NULL": None}[token.text], token.position
        found = token.text or "end of query"
        raise WqlError(f"expected a property or a constant, found {found!r}", position=token.position)

    def _predicate(self) -> Expr:
        left_kind, left, left_pos = self._operand()
        if left_kind == "prop" and isinstance(left, str):
            if self._is("keyword", "IS"):
                self._advance()
                negated = self._is("keyword", "NOT")
                if negated:
                    self._advance()
                self._expect("keyword", "NULL")
                return IsNull(left, negated)
            if self._is("keyword", "NOT") or self._is("keyword", "LIKE"):
                negated = self._is("keyword", "NOT")
                if negated:
                    self._advance()
                self._expect("keyword", "LIKE")
                pattern = self._expect("string")
                return Like(left, str(pattern.value), negated)
        op_token = self._expect("op")
        op: CompareOp = op_token.text  # type: ignore[assignment]  # the tokenizer only emits CompareOp texts
        right_kind, right, right_pos = self._operand()
        if left_kind == right_kind:
            what = "two properties" if left_kind == "prop" else "two constants"
            raise WqlError(f"WQL cannot compare {what}", position=left_pos)
        if left_kind == "prop":
            prop, value = str(left), right
        else:
            prop, value, op = str(right), left, _SWAPPED[op]
        if value is None:
            if op not in ("=", "<>"):
                raise WqlError("NULL can only be compared with = or <>", position=right_pos)
            return IsNull(prop, negated=op == "<>")
        return Comparison(prop, op, value)


def parse(text: str) -> Query:
    """Parse a WQL SELECT statement; raises WqlError on any syntax error."""
    if len(text) > _MAX_QUERY_CHARS:
        raise WqlError("query too long")
    return _Parser(_tokenize(text)).query()


# --------------------------------------------------------------------------- name resolution


def _resolve_expr(expr: Expr, canonical: Callable[[str], str]) -> Expr:
    if isinstance(expr, Comparison):
        return Comparison(canonical(expr.prop), expr.op, expr.value)
    if isinstance(expr, Like):
        return Like(canonical(expr.prop), expr.pattern, expr.negated)
    if isinstance(expr, IsNull):
        return IsNull(canonical(expr.prop), expr.negated)
    if isinstance(expr, Not):
        return Not(_resolve_expr(expr.item, canonical))
    if isinstance(expr, And):
        return And(tuple(_resolve_expr(item, canonical) for item in expr.items))
    return Or(tuple(_resolve_expr(item, canonical) for item in expr.items))


def resolve(query: Query, class_name: str, property_names: Iterable[str]) -> Query:
    """Rewrite names to their canonical spelling; raises WqlError for an unknown property."""
    by_lower = {name.lower(): name for name in property_names}

    def canonical(name: str) -> str:
        try:
            return by_lower[name.lower()]
        except KeyError:
            raise WqlError(f"{class_name} has no property {name!r}", kind="unknown_property") from None

    properties = None if query.properties is None else tuple(canonical(p) for p in query.properties)
    where = None if query.where is None else _resolve_expr(query.where, canonical)
    return Query(class_name=class_name, properties=properties, where=where)
