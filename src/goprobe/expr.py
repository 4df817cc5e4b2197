"""The expression language of captures and conditions: a subset of Go expression syntax.

Grammar (Go precedence; parentheses only group)::

    expr     = or
    or       = and { "||" and }
    and      = cmp { "&&" cmp }
    cmp      = unary { ("==" | "!=" | "<" | "<=" | ">" | ">=") unary }
    unary    = ("!" | "-" | "*") unary | postfix
    postfix  = primary { "." field | "." "(" type ")" | "[" expr "]" }
    primary  = ident | int | string | "true" | "false" | "nil" | ("len" | "cap") "(" expr ")" | "(" expr ")"

Identifiers follow Go (Unicode letters, digits, ``_``) and may start with ``~`` for the compiler's names of
unnamed results and parameters (``~r0``, ``~p1``). ``pkg.Global`` parses as a selector on ``pkg``; the compiler
decides whether ``pkg`` is a package. ``-`` applied directly to an integer literal folds into a negative
:class:`IntLit`. Types in assertions are a subset of Go types (named, generic instances, pointers, slices,
arrays, maps, channels, ``func`` signatures, ``struct{}``, ``interface{}``) kept as canonical text.

:func:`parse` builds the AST, :func:`unparse` prints canonical text (``parse(unparse(e)) == e``).
"""

from __future__ import annotations

from collections.abc import Iterator
import unicodedata

import attrs

from goprobe.errors import ExpressionSyntaxError

__all__ = [
    "BINARY_OPS", "Binary", "BoolLit", "Call", "Deref", "Expr", "Ident", "Index", "IntLit", "NilLit",
    "Selector", "StringLit", "TypeAssert", "TypeName", "Unary", "canonical_type", "identifiers",
    "is_condition", "parse", "unparse", "walk",
]

Span = tuple[int, int]

KEYWORDS = frozenset(
    "break case chan const continue default defer else fallthrough for func go goto if import interface map "
    "package range return select struct switch type var".split()
)
BUILTINS = ("len", "cap")
_RESERVED = KEYWORDS | {"true", "false", "nil"}  # not Ident names: keywords, and literal nodes
_PRECEDENCE = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3}
BINARY_OPS = frozenset(_PRECEDENCE)
UNARY_OPS = frozenset({"!", "-"})
INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1  # literals may be compared with uint64 values
MAX_NESTING = 100  # keeps the recursive-descent parser far from Python's recursion limit


# --------------------------------------------------------------------------------------------------- AST


def _span() -> Span:
    # Spans locate nodes in the source for messages; two parses of differently spaced text are still equal.
    return attrs.field(default=(0, 0), eq=False, repr=False, kw_only=True)


def _is_letter(c: str) -> bool:
    return c == "_" or unicodedata.category(c) in ("Lu", "Ll", "Lt", "Lm", "Lo")


def _is_ident_char(c: str) -> bool:
    return _is_letter(c) or unicodedata.category(c) == "Nd"


def _is_go_ident(name: str) -> bool:
    return bool(name) and _is_letter(name[0]) and all(_is_ident_char(c) for c in name)


def _check_name(_inst, attr, value) -> None:
    bare = value[1:] if isinstance(value, str) and value.startswith("~") else value
    if not (isinstance(value, str) and _is_go_ident(bare) and value not in _RESERVED):
        raise ValueError(f"{attr.name} must be a Go identifier (not a keyword, true, false or nil), got {value!r}")


def _check_field(_inst, attr, value) -> None:
    if not (isinstance(value, str) and _is_go_ident(value) and value not in KEYWORDS):
        raise ValueError(f"{attr.name} must be a Go identifier (not a keyword), got {value!r}")


def _check_expr(_inst, attr, value) -> None:
    if not isinstance(value, Expr):
        raise TypeError(f"{attr.name} must be an Expr node, got {value!r}")


class Expr:
    """Base class of expression AST nodes (all immutable; ``span`` is excluded from equality)."""

    __slots__ = ()
    span: Span


@attrs.frozen
class Ident(Expr):
    """A variable, package or other root name: ``req``, ``~r0``."""

    name: str = attrs.field(validator=_check_name)
    span: Span = _span()


@attrs.frozen
class Selector(Expr):
    """``operand.field`` (also ``pkg.Global``, resolved by the compiler)."""

    operand: Expr = attrs.field(validator=_check_expr)
    field: str = attrs.field(validator=_check_field)
    span: Span = _span()


@attrs.frozen
class Deref(Expr):
    """``*operand``."""

    operand: Expr = attrs.field(validator=_check_expr)
    span: Span = _span()


@attrs.frozen
class Index(Expr):
    """``operand[index]`` on arrays, slices, strings and maps."""

    operand: Expr = attrs.field(validator=_check_expr)
    index: Expr = attrs.field(validator=_check_expr)
    span: Span = _span()


def _check_call(inst: Call, _attr, _value) -> None:
    if inst.func not in BUILTINS:
        raise ValueError(f"func must be one of {BUILTINS}, got {inst.func!r}")
    if len(inst.args) != 1 or not all(isinstance(a, Expr) for a in inst.args):
        raise ValueError(f"{inst.func} takes exactly one Expr argument, got {inst.args!r}")


@attrs.frozen
class Call(Expr):
    """A builtin call: ``len(x)`` or ``cap(x)``."""

    func: str
    args: tuple[Expr, ...] = attrs.field(converter=tuple, validator=_check_call)
    span: Span = _span()


def _check_type_text(inst: TypeName, _attr, _value) -> None:
    if not isinstance(inst.pointer_depth, int) or isinstance(inst.pointer_depth, bool) or inst.pointer_depth < 0:
        raise ValueError(f"pointer_depth must be a non-negative int, got {inst.pointer_depth!r}")
    try:
        canonical = canonical_type(inst.text)
    except ExpressionSyntaxError as e:
        raise ValueError(f"text must be a Go type, got {inst.text!r}: {e}") from None
    if canonical != inst.text or canonical.startswith("*"):
        raise ValueError(f"text must be canonical and without leading '*' (use pointer_depth), got {inst.text!r}")


@attrs.frozen
class TypeName:
    """The type of a type assertion: canonical Go type text with the leading ``*`` counted in ``pointer_depth``.

    ``*pkg.T`` is ``TypeName("pkg.T", 1)``; ``map[string][]byte`` is ``TypeName("map[string][]byte", 0)``.
    Canonical text has no spaces except between two words (``chan int``); see :func:`canonical_type`.
    """

    text: str
    pointer_depth: int = attrs.field(default=0, validator=_check_type_text)

    def __str__(self) -> str:
        return "*" * self.pointer_depth + self.text


@attrs.frozen
class TypeAssert(Expr):
    """``operand.(type)``."""

    operand: Expr = attrs.field(validator=_check_expr)
    type: TypeName = attrs.field(validator=attrs.validators.instance_of(TypeName))
    span: Span = _span()


def _check_int(_inst, _attr, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not INT_MIN <= value <= INT_MAX:
        raise ValueError(f"value must be an int in [-2**63, 2**64-1], got {value!r}")


@attrs.frozen
class IntLit(Expr):
    """An integer literal (negative when ``-`` was applied directly to a literal)."""

    value: int = attrs.field(validator=_check_int)
    span: Span = _span()


@attrs.frozen
class StringLit(Expr):
    """A string literal's bytes (Go strings are bytes; escapes may produce invalid UTF-8)."""

    value: bytes = attrs.field(validator=attrs.validators.instance_of(bytes))
    span: Span = _span()


@attrs.frozen
class BoolLit(Expr):
    """``true`` or ``false``."""

    value: bool = attrs.field(validator=attrs.validators.instance_of(bool))
    span: Span = _span()


@attrs.frozen
class NilLit(Expr):
    """``nil``."""

    span: Span = _span()


@attrs.frozen
class Unary(Expr):
    """``!operand`` or ``-operand``."""

    op: str = attrs.field(validator=attrs.validators.in_(UNARY_OPS))
    operand: Expr = attrs.field(validator=_check_expr)
    span: Span = _span()


@attrs.frozen
class Binary(Expr):
    """A comparison (``== != < <= > >=``) or logical (``&& ||``) operation."""

    op: str = attrs.field(validator=attrs.validators.in_(BINARY_OPS))
    left: Expr = attrs.field(validator=_check_expr)
    right: Expr = attrs.field(validator=_check_expr)
    span: Span = _span()


# ----------------------------------------------------------------------------------------------- scanner


@attrs.frozen
class _Token:
    kind: str  # "ident" | "int" | "string" | "op" | "bad" | "eof"
    text: str
    start: int
    end: int
    value: object = None

    def describe(self) -> str:
        if self.kind == "eof":
            return "end of input"
        if self.kind == "ident":
            return f'keyword "{self.text}"' if self.text in KEYWORDS else f'identifier "{self.text}"'
        if self.kind == "int":
            return f"integer {self.text}"
        if self.kind == "string":
            return "string literal"
        return f'"{self.text}"'


_OPS2 = ("==", "!=", "<=", ">=", "&&", "||", "<-")
_OPS1 = frozenset(".()[]{},*!-<>")
_WHITESPACE = " \t\r\n"
_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11, "\\": 92, '"': 34}
_HEX = frozenset("0123456789abcdefABCDEF")
_DIGITS = {"b": "01", "o": "01234567", "x": "0123456789abcdef"}


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, offset: int, expected: str, found: str | None = None, **kw) -> ExpressionSyntaxError:
        return ExpressionSyntaxError(self.text, offset + 1, expected, found, **kw)

    def next(self) -> _Token:
        text, n = self.text, len(self.text)
        while self.pos < n and text[self.pos] in _WHITESPACE:
            self.pos += 1
        start = self.pos
        if start >= n:
            return _Token("eof", "", n, n)
        c = text[start]
        if _is_letter(c) or (c == "~" and start + 1 < n and _is_letter(text[start + 1])):
            end = start + 1
            while end < n and _is_ident_char(text[end]):
                end += 1
            return self._token("ident", end)
        if "0" <= c <= "9":
            return self._number(start)
        if c == '"':
            return self._string(start)
        if c == "`":
            return self._raw_string(start)
        if text.startswith("...", start):
            return self._token("op", start + 3)
        if text.startswith(_OPS2, start):
            return self._token("op", start + 2)
        if c in _OPS1:
            return self._token("op", start + 1)
        # The parser reports a bad character as "expected <what it wanted>, found ..." with its own context.
        return self._token("bad", start + 1)

    def _token(self, kind: str, end: int, value: object = None) -> _Token:
        tok = _Token(kind, self.text[self.pos:end], self.pos, end, value)
        self.pos = end
        return tok

    def _number(self, start: int) -> _Token:
        text, end = self.text, start
        while end < len(text) and (text[end].isascii() and (text[end].isalnum() or text[end] == "_")):
            end += 1
        if end < len(text) and text[end] == ".":
            raise self.error(end, "integer literal", headline="floating-point literals are not supported")
        value = _int_value(text[start:end])
        if value is None:
            raise self.error(start, "integer literal", f"{text[start:end]!r}",
                             hint="decimal, 0x hex, 0o or 0 octal, 0b binary, with _ only between digits")
        if value > INT_MAX:
            raise self.error(start, "integer literal that fits in 64 bits", f"{text[start:end]}")
        return self._token("int", end, value)

    def _string(self, start: int) -> _Token:
        text, n, i = self.text, len(self.text), start + 1
        out = bytearray()
        while True:
            if i >= n or text[i] == "\n":
                raise self.error(start, 'closing \'"\' of this string literal')
            c = text[i]
            if c == '"':
                break
            if c != "\\":
                out += self._utf8(c, i)
                i += 1
                continue
            e = text[i + 1] if i + 1 < n else ""
            if e in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[e])
                i += 2
            elif e in ("x", "u", "U"):
                width = {"x": 2, "u": 4, "U": 8}[e]
                digits = text[i + 2:i + 2 + width]
                if len(digits) < width or not set(digits) <= _HEX:
                    raise self.error(i, f"{width} hex digits after \\{e}")
                v = int(digits, 16)
                if e == "x":
                    out.append(v)
                elif v > 0x10FFFF or 0xD800 <= v <= 0xDFFF:
                    raise self.error(i, "a valid Unicode code point", f"\\{e}{digits}")
                else:
                    out += chr(v).encode()
                i += 2 + width
            elif "0" <= e <= "7":
                digits = text[i + 1:i + 4]
                if len(digits) < 3 or not all("0" <= d <= "7" for d in digits):
                    raise self.error(i, "3 octal digits after \\")
                if int(digits, 8) > 255:
                    raise self.error(i, "an octal escape of at most \\377", f"\\{digits}")
                out.append(int(digits, 8))
                i += 4
            else:
                raise self.error(i, r'an escape sequence (\a \b \f \n \r \t \v \\ \" \xNN \NNN \uNNNN \UNNNNNNNN)',
                                 f"\\{e}" if e else "end of input")
        return self._token("string", i + 1, bytes(out))

    def _raw_string(self, start: int) -> _Token:
        end = self.text.find("`", start + 1)
        if end < 0:
            raise self.error(start, "closing '`' of this raw string literal")
        body = self.text[start + 1:end].replace("\r", "")  # Go drops carriage returns from raw strings
        out = b"".join(self._utf8(c, start + 1 + k) for k, c in enumerate(body))
        return self._token("string", end + 1, out)

    def _utf8(self, c: str, offset: int) -> bytes:
        try:
            return c.encode()
        except UnicodeEncodeError:  # a lone surrogate: Python text that no Go source file can contain
            raise self.error(offset, "a valid Unicode character", f"U+{ord(c):04X}") from None


def _int_value(s: str) -> int | None:
    """The value of a Go integer literal, or ``None`` if *s* is not one."""
    if "__" in s or s.endswith("_"):
        return None
    if s[0] != "0" or len(s) == 1:
        return int(s.replace("_", "")) if s.replace("_", "").isdigit() else None
    base = s[1].lower()
    if base in _DIGITS:
        digits = s[2:].removeprefix("_").lower()
        if not digits or not set(digits.replace("_", "")) <= set(_DIGITS[base]):
            return None
        return int(digits.replace("_", ""), {"b": 2, "o": 8, "x": 16}[base])
    digits = s[1:].removeprefix("_")  # legacy octal: 0777, 0_7
    if not digits or not set(digits.replace("_", "")) <= set(_DIGITS["o"]):
        return None
    return int(digits.replace("_", ""), 8)


# ------------------------------------------------------------------------------------------------ parser

_TYPE_STARTS = frozenset({"*", "[", "(", "<-"})


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.scanner = _Scanner(text)
        self.depth = 0
        self.last_end = 0
        self.tok = self.scanner.next()

    # helpers

    def advance(self) -> _Token:
        tok = self.tok
        self.last_end = tok.end
        self.tok = self.scanner.next()
        return tok

    def at(self, op: str) -> bool:
        return self.tok.kind == "op" and self.tok.text == op

    def error(self, expected: str, tok: _Token | None = None, **kw) -> ExpressionSyntaxError:
        tok = tok or self.tok
        return ExpressionSyntaxError(self.text, tok.start + 1, expected, tok.describe(), **kw)

    def expect(self, op: str) -> _Token:
        if not self.at(op):
            raise self.error(f'"{op}"')
        return self.advance()

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise self.error("a shallower expression", headline=f"nesting deeper than {MAX_NESTING} levels")

    def finish(self) -> None:
        if self.tok.kind != "eof":
            hint = None
            if self.tok.text == "=":
                hint = 'compare with "=="'
            elif self.tok.text in ("+", "-", "*", "/", "%", "&", "|", "^"):
                hint = "arithmetic and bitwise operators are not supported"
            raise self.error("end of input", hint=hint)

    # expressions

    def expression(self, level: int = 1) -> Expr:
        if level > 3:
            return self.unary()
        start = self.tok.start
        left = self.expression(level + 1)
        while self.tok.kind == "op" and _PRECEDENCE.get(self.tok.text) == level:
            op = self.advance().text
            right = self.expression(level + 1)
            left = Binary(op, left, right, span=(start, self.last_end))
        return left

    def unary(self) -> Expr:
        if not (self.tok.kind == "op" and self.tok.text in ("!", "-", "*")):
            return self.postfix()
        self.nest()
        op_tok = self.advance()
        literal = self.tok.kind == "int"
        operand = self.unary()
        self.depth -= 1
        span = (op_tok.start, self.last_end)
        if op_tok.text == "*":
            return Deref(operand, span=span)
        if op_tok.text == "-" and literal and isinstance(operand, IntLit):
            # A bare literal operand (not "(5)", not "5[0]"): fold so m[-1] indexes with a constant.
            if -operand.value < INT_MIN:
                raise self.error("integer literal that fits in 64 bits", op_tok, headline="integer out of range")
            return IntLit(-operand.value, span=span)
        return Unary(op_tok.text, operand, span=span)

    def postfix(self) -> Expr:
        start = self.tok.start
        node = self.primary()
        while True:
            if self.at("."):
                self.advance()
                if self.at("("):
                    self.advance()
                    text = self.type()
                    self.expect(")")
                    depth = len(text) - len(text.lstrip("*"))
                    node = TypeAssert(node, TypeName(text[depth:], depth), span=(start, self.last_end))
                elif self.tok.kind == "ident" and self.tok.text not in KEYWORDS and self.tok.text[0] != "~":
                    node = Selector(node, self.advance().text, span=(start, self.last_end))
                else:
                    raise self.error('field name or "(" after "."')
            elif self.at("["):
                self.nest()
                self.advance()
                index = self.expression()
                if self.tok.text == ":":
                    raise self.error('"]"', hint="slice expressions are not supported")
                self.expect("]")
                self.depth -= 1
                node = Index(node, index, span=(start, self.last_end))
            elif self.at("("):
                raise self.error("an operator or end of input", headline="unsupported call",
                                 hint="only the builtins len and cap can be called")
            else:
                return node

    def primary(self) -> Expr:
        tok = self.tok
        if tok.kind == "int":
            self.advance()
            return IntLit(tok.value, span=(tok.start, tok.end))
        if tok.kind == "string":
            self.advance()
            return StringLit(tok.value, span=(tok.start, tok.end))
        if tok.kind == "ident" and tok.text not in KEYWORDS:
            self.advance()
            if self.at("("):
                return self.call(tok)
            if tok.text in ("true", "false"):
                return BoolLit(tok.text == "true", span=(tok.start, tok.end))
            if tok.text == "nil":
                return NilLit(span=(tok.start, tok.end))
            return Ident(tok.text, span=(tok.start, tok.end))
        if self.at("("):
            self.nest()
            self.advance()
            inner = self.expression()
            self.expect(")")
            self.depth -= 1
            return inner
        raise self.error("an expression")

    def call(self, name: _Token) -> Expr:
        if name.text not in BUILTINS:
            raise ExpressionSyntaxError(self.text, name.start + 1, "len or cap", headline=f'unknown builtin "{name.text}"',
                                        hint="only len and cap can be called")
        one_arg = f"{name.text} takes exactly one argument"
        self.nest()
        self.advance()
        if self.at(")"):
            raise self.error("an expression", hint=one_arg)
        arg = self.expression()
        if self.at(","):  # Go allows a trailing comma
            self.advance()
            if not self.at(")"):
                raise self.error('")"', hint=one_arg)
        self.expect(")")
        self.depth -= 1
        return Call(name.text, (arg,), span=(name.start, self.last_end))

    # types: each returns canonical text; spaces only where two words would otherwise merge

    def type(self) -> str:
        self.nest()
        text = self._type()
        self.depth -= 1
        return text

    def _type(self) -> str:
        tok = self.tok
        if self.at("*"):
            self.advance()
            return "*" + self.type()
        if self.at("("):
            self.advance()
            inner = self.type()
            self.expect(")")
            return inner
        if self.at("["):
            self.advance()
            if self.at("]"):
                self.advance()
                return "[]" + self.type()
            if self.tok.kind != "int":
                raise self.error('"]" or array length')
            length = self.advance().value
            self.expect("]")
            return f"[{length}]" + self.type()
        if self.at("<-"):
            self.advance()
            if not (self.tok.kind == "ident" and self.tok.text == "chan"):
                raise self.error('"chan" after "<-"')
            self.advance()
            return _join("<-chan", self.type())
        if tok.kind != "ident":
            raise self.error("a type")
        if tok.text == "map":
            self.advance()
            self.expect("[")
            key = self.type()
            self.expect("]")
            return f"map[{key}]" + self.type()
        if tok.text == "chan":
            self.advance()
            if self.at("<-"):
                self.advance()
                return _join("chan<-", self.type())
            elem = self.type()
            # "chan <-chan T" would read back as "chan<- chan T": Go needs the parentheses here.
            return "chan(" + elem + ")" if elem.startswith("<-") else _join("chan", elem)
        if tok.text in ("struct", "interface"):
            self.advance()
            self.expect("{")
            if not self.at("}"):
                raise self.error('"}"', hint=f"only the empty {tok.text}{{}} type literal is supported")
            self.advance()
            return tok.text + "{}"
        if tok.text == "func":
            return self._func_type()
        if tok.text in KEYWORDS or tok.text[0] == "~":
            raise self.error("a type")
        self.advance()
        name = tok.text
        if self.at("."):
            self.advance()
            if self.tok.kind != "ident" or self.tok.text in KEYWORDS or self.tok.text[0] == "~":
                raise self.error('type name after "."')
            name += "." + self.advance().text
        if self.at("["):
            self.advance()
            if self.at("]"):
                raise self.error("a type argument")
            args = self._type_list("]")
            name += "[" + ",".join(args) + "]"
        return name

    def _type_list(self, close: str, variadic: bool = False) -> list[str]:
        items = []
        while not self.at(close):
            if variadic and self.at("..."):
                self.advance()
                items.append("..." + self.type())
                if self.at(","):
                    self.advance()
                if not self.at(close):
                    raise self.error(f'"{close}"', hint="only the last parameter can be variadic")
                break
            items.append(self.type())
            if not self.at(","):
                break
            self.advance()
        self.expect(close)
        return items

    def _func_type(self) -> str:
        self.advance()
        self.expect("(")
        text = "func(" + ",".join(self._type_list(")", variadic=True)) + ")"
        if self.at("("):
            self.advance()
            results = self._type_list(")")
            if len(results) == 1:
                return _join(text, results[0])
            return text + "(" + ",".join(results) + ")"
        if self.tok.kind == "ident" or (self.tok.kind == "op" and self.tok.text in _TYPE_STARTS):
            return _join(text, self.type())
        return text


def _join(a: str, b: str) -> str:
    return a + " " + b if _is_ident_char(a[-1]) and _is_ident_char(b[0]) else a + b


# ------------------------------------------------------------------------------------------- public API


def parse(text: str) -> Expr:
    """Parse an expression; raises :class:`~goprobe.errors.ExpressionSyntaxError` for anything invalid."""
    p = _Parser(text)
    if p.tok.kind == "eof":
        raise ExpressionSyntaxError(text, len(text) + 1, "an expression", headline="empty expression")
    node = p.expression()
    p.finish()
    return node


def canonical_type(text: str) -> str:
    """Canonical spelling of a Go type as used in :class:`TypeName` (e.g. ``map[ string ] * T`` → ``map[string]*T``).

    Raises :class:`~goprobe.errors.ExpressionSyntaxError` if *text* is not a supported Go type.
    """
    p = _Parser(text)
    result = p.type()
    p.finish()
    return result


def unparse(expr: Expr) -> str:
    """Canonical text of *expr*: binary operators spaced, no redundant parentheses, literals in decimal and
    interpreted-string form."""
    if isinstance(expr, Ident):
        return expr.name
    if isinstance(expr, IntLit):
        return str(expr.value)
    if isinstance(expr, StringLit):
        return quote(expr.value)
    if isinstance(expr, BoolLit):
        return "true" if expr.value else "false"
    if isinstance(expr, NilLit):
        return "nil"
    if isinstance(expr, Selector):
        return f"{_postfix_operand(expr.operand)}.{expr.field}"
    if isinstance(expr, Index):
        return f"{_postfix_operand(expr.operand)}[{unparse(expr.index)}]"
    if isinstance(expr, TypeAssert):
        return f"{_postfix_operand(expr.operand)}.({expr.type})"
    if isinstance(expr, Call):
        return f"{expr.func}({', '.join(unparse(a) for a in expr.args)})"
    if isinstance(expr, Deref):
        return "*" + _unary_operand(expr.operand, "*")
    if isinstance(expr, Unary):
        return expr.op + _unary_operand(expr.operand, expr.op)
    if isinstance(expr, Binary):
        p = _PRECEDENCE[expr.op]
        left = unparse(expr.left)
        if isinstance(expr.left, Binary) and _PRECEDENCE[expr.left.op] < p:
            left = f"({left})"
        right = unparse(expr.right)
        if isinstance(expr.right, Binary) and _PRECEDENCE[expr.right.op] <= p:  # left-associative
            right = f"({right})"
        return f"{left} {expr.op} {right}"
    raise TypeError(f"not an expression node: {expr!r}")


def _postfix_operand(e: Expr) -> str:
    # Integer literals too: "5.x" would scan as a float, "-5[0]" would negate the indexing.
    if isinstance(e, (Unary, Deref, Binary, IntLit)):
        return f"({unparse(e)})"
    return unparse(e)


def _unary_operand(e: Expr, op: str) -> str:
    if isinstance(e, Binary) or (op == "-" and (isinstance(e, IntLit) or (isinstance(e, Unary) and e.op == "-"))):
        # "-5" would fold into IntLit(-5); "--x" is Go's decrement token.
        return f"({unparse(e)})"
    return unparse(e)


_QUOTE_ESCAPES = {7: r"\a", 8: r"\b", 12: r"\f", 10: r"\n", 13: r"\r", 9: r"\t", 11: r"\v", 92: r"\\", 34: r"\""}


def quote(value: bytes) -> str:
    """A Go interpreted string literal for *value* (printable UTF-8 kept, everything else escaped)."""
    out = ['"']
    for c in value.decode("utf-8", errors="surrogateescape"):
        o = ord(c)
        if 0xDC80 <= o <= 0xDCFF:  # a byte that is not part of valid UTF-8
            out.append(f"\\x{o - 0xDC00:02x}")
        elif o in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[o])
        elif c.isprintable():
            out.append(c)
        elif o < 0x80:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


def walk(expr: Expr) -> Iterator[Expr]:
    """Every node of *expr*, parents before children, left to right."""
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, Binary):
            children = [node.left, node.right]
        elif isinstance(node, Index):
            children = [node.operand, node.index]
        elif isinstance(node, Call):
            children = list(node.args)
        elif isinstance(node, (Selector, Deref, TypeAssert, Unary)):
            children = [node.operand]
        else:
            children = []
        stack.extend(reversed(children))


def identifiers(expr: Expr) -> set[str]:
    """Root identifiers *expr* reads (``s`` and ``k`` in ``s.m[k]``); not fields, builtins or type names."""
    return {n.name for n in walk(expr) if isinstance(n, Ident)}


def is_condition(expr: Expr) -> bool:
    """Whether *expr* is syntactically a condition: a comparison, ``&&``, ``||`` or ``!`` at the top."""
    return isinstance(expr, Binary) or (isinstance(expr, Unary) and expr.op == "!")
