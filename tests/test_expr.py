"""The expression language: parser, canonical printer, errors with columns, and their properties."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings, strategies as st
import pytest

from goprobe.errors import ExpressionSyntaxError, GoprobeError
from goprobe.expr import (
    Binary, BoolLit, Call, Deref, Expr, Ident, Index, IntLit, NilLit, Selector, StringLit, TypeAssert, TypeName,
    Unary, canonical_type, identifiers, is_condition, parse, unparse, walk,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def syntax_error(text: str) -> ExpressionSyntaxError:
    with pytest.raises(ExpressionSyntaxError) as info:
        parse(text)
    return info.value


# ------------------------------------------------------------------------------------------- examples

x, y, p, s, m, req = (Ident(n) for n in ("x", "y", "p", "s", "m", "req"))


@pytest.mark.parametrize("text, tree", [
    ("x", x),
    ("~r0", Ident("~r0")),
    ("日本", Ident("日本")),
    ("req.URL.Path", Selector(Selector(req, "URL"), "Path")),
    ("pkg.Global", Selector(Ident("pkg"), "Global")),
    ("*p", Deref(p)),
    ("*p.next", Deref(Selector(p, "next"))),
    ("(*p).next", Selector(Deref(p), "next")),
    ("**p", Deref(Deref(p))),
    ("x[1]", Index(x, IntLit(1))),
    ('m["k"]', Index(m, StringLit(b"k"))),
    ("m[-3]", Index(m, IntLit(-3))),
    ("x[y][0].f", Selector(Index(Index(x, y), IntLit(0)), "f")),
    ("len(s.conns)", Call("len", (Selector(s, "conns"),))),
    ("cap( x , )", Call("cap", (x,))),
    ("len(x)[0]", Index(Call("len", (x,)), IntLit(0))),
    ("x.(T)", TypeAssert(x, TypeName("T"))),
    ("x.(*T)", TypeAssert(x, TypeName("T", 1))),
    ("x.(pkg.T)", TypeAssert(x, TypeName("pkg.T"))),
    ("x.(*pkg.T).f", Selector(TypeAssert(x, TypeName("pkg.T", 1)), "f")),
    ("x.([]byte)", TypeAssert(x, TypeName("[]byte"))),
    ("x.(map[string]int)", TypeAssert(x, TypeName("map[string]int"))),
    ("x.(* * T)", TypeAssert(x, TypeName("T", 2))),
    ("true", BoolLit(True)),
    ("false", BoolLit(False)),
    ("nil", NilLit()),
    ("len", Ident("len")),  # builtins can be shadowed; only a call needs them to be len/cap
    ("!ok", Unary("!", Ident("ok"))),
    ("-x", Unary("-", x)),
    ("-5", IntLit(-5)),
    ("- 5", IntLit(-5)),
    ("-(5)", Unary("-", IntLit(5))),
    ("-5[0]", Unary("-", Index(IntLit(5), IntLit(0)))),
    ("--5", Unary("-", IntLit(-5))),
    ("x == nil", Binary("==", x, NilLit())),
    ("a || b && c", Binary("||", Ident("a"), Binary("&&", Ident("b"), Ident("c")))),
    ("a && b || c", Binary("||", Binary("&&", Ident("a"), Ident("b")), Ident("c"))),
    ("x < 1 && y >= 2", Binary("&&", Binary("<", x, IntLit(1)), Binary(">=", y, IntLit(2)))),
    ("a == b != c", Binary("!=", Binary("==", Ident("a"), Ident("b")), Ident("c"))),
    ("(a || b) && c", Binary("&&", Binary("||", Ident("a"), Ident("b")), Ident("c"))),
    ("!(x == 1)", Unary("!", Binary("==", x, IntLit(1)))),
    ("x<-1", None),  # Go scans "<-" here, as goprobe does: an error, see test below
    ("\tx\n.\ny ", Selector(x, "y")),
])
def test_parse_examples(text, tree):
    if tree is None:
        return
    assert parse(text) == tree
    assert parse(unparse(tree)) == tree


def test_receive_token_is_not_less_than_minus():
    err = syntax_error("x<-1")
    assert (err.column, err.expected, err.found) == (2, "end of input", '"<-"')
    assert parse("x < -1") == Binary("<", x, IntLit(-1))


@pytest.mark.parametrize("text, value", [
    ("0", 0), ("42", 42), ("1_000_000", 1_000_000), ("0x2A", 42), ("0X_2a", 42), ("0o52", 42), ("0O_52", 42),
    ("052", 42), ("0_52", 42), ("0b101010", 42), ("0B_1010_10", 42), ("00", 0),
    ("18446744073709551615", 2**64 - 1), ("-9223372036854775808", -(2**63)),
])
def test_int_literals(text, value):
    assert parse(text) == IntLit(value)


@pytest.mark.parametrize("text, column", [
    ("1__0", 1), ("1_", 1), ("0x", 1), ("0x_", 1), ("0b102", 1), ("08", 1), ("0o8", 1), ("1e5", 1), ("0xg", 1),
    ("x == 1.5", 7), ("x[1.]", 4), ("18446744073709551616", 1), ("x == -9223372036854775809", 6),
])
def test_bad_int_literals(text, column):
    assert syntax_error(text).column == column


@pytest.mark.parametrize("text, value", [
    (r'"plain"', b"plain"),
    (r'""', b""),
    (r'"\a\b\f\n\r\t\v\\\""', b"\a\b\f\n\r\t\v\\\""),
    (r'"\x00\xff\xFf"', b"\x00\xff\xff"),
    (r'"\000\101\377"', b"\x00A\xff"),
    (r'"\u00e9\U0001F600"', "é😀".encode()),
    ('"é日本"', "é日本".encode()),
    ("`raw \\n \"q\" ,`", b'raw \\n "q" ,'),
    ("`multi\r\nline`", b"multi\nline"),  # Go drops carriage returns from raw strings
])
def test_string_literals(text, value):
    assert parse(text) == StringLit(value)


@pytest.mark.parametrize("text, column, expected_part", [
    ('"abc', 1, "closing"),
    ('x == "abc', 6, "closing"),
    ('"ab\ncd"', 1, "closing"),  # interpreted strings cannot span lines
    ("`abc", 1, "closing '`'"),
    (r'"a\q"', 3, "escape sequence"),
    (r'"a\'"', 3, "escape sequence"),  # \' is a rune-literal escape only
    (r'"\x4"', 2, "2 hex digits"),
    (r'"\u12"', 2, "4 hex digits"),
    (r'"\U0011000000"', 2, "valid Unicode"),
    (r'"\ud800"', 2, "valid Unicode"),
    (r'"\400"', 2, "at most \\377"),
    (r'"\12"', 2, "3 octal digits"),
    ('"\\', 2, "escape sequence"),
    ('"\ud800"', 2, "valid Unicode character"),
])
def test_bad_string_literals(text, column, expected_part):
    err = syntax_error(text)
    assert err.column == column
    assert expected_part in err.expected


@pytest.mark.parametrize("text, column, expected", [
    ("", 1, "an expression"),
    ("   ", 4, "an expression"),
    ("len(x.items", 12, '")"'),
    ("x.", 3, 'field name or "(" after "."'),
    ("x.1", 3, 'field name or "(" after "."'),
    ("x.func", 3, 'field name or "(" after "."'),
    ("x.~r0", 3, 'field name or "(" after "."'),
    ("x y", 3, "end of input"),
    ("x == ", 6, "an expression"),
    ("(x", 3, '")"'),
    ("x)", 2, "end of input"),
    ("x[1", 4, '"]"'),
    ("x[1:2]", 4, '"]"'),
    ("x[]", 3, "an expression"),
    ("a = b", 3, "end of input"),
    ("a + b", 3, "end of input"),
    ("&x", 1, "an expression"),
    ("x # y", 3, "end of input"),
    ("func", 1, "an expression"),
    ("foo(x)", 1, "len or cap"),
    ("len()", 5, "an expression"),
    ("len(x, y)", 8, '")"'),
    ("x.f(1)", 4, "an operator or end of input"),
    ("x.()", 4, "a type"),
    ("x.(T", 5, '")"'),
    ("x.(map[int])", 12, "a type"),
    ("x.([x]int)", 5, '"]" or array length'),
    ("x.(struct{a int})", 11, '"}"'),
    ("x.(<-int)", 6, '"chan" after "<-"'),
    ("x.(pkg.)", 8, 'type name after "."'),
    ("x.(T[])", 6, "a type argument"),
    ("x.(func(...int, int))", 17, '")"'),
    ("x.(~r0)", 4, "a type"),
])
def test_syntax_error_columns(text, column, expected):
    err = syntax_error(text)
    assert (err.column, err.expected) == (column, expected), str(err)


def test_error_message_format():
    err = syntax_error("len(x.items")
    assert isinstance(err, GoprobeError)
    assert err.text == "len(x.items"
    head, line, caret = str(err).split("\n")
    assert head == 'expected ")" at column 12 in "len(x.items", found end of input'
    assert line == "  len(x.items"
    assert caret == "  " + " " * 11 + "^"


def test_error_messages_name_the_problem():
    assert "unknown builtin \"foo\"" in str(syntax_error("foo(x)")) and "only len and cap" in str(syntax_error("foo(x)"))
    assert "len takes exactly one argument" in str(syntax_error("len(x, y)"))
    assert "only the builtins len and cap" in str(syntax_error("x.f(1)"))
    assert 'compare with "=="' in str(syntax_error("a = b"))
    assert "arithmetic" in str(syntax_error("a + b"))
    assert "slice expressions" in str(syntax_error("x[1:2]"))
    assert "floating-point" in str(syntax_error("1.5"))
    assert "empty expression" in str(syntax_error(""))


def test_caret_points_into_the_right_line_of_multiline_text():
    err = syntax_error("x == `a\nb` )")
    assert err.column == 12
    assert str(err).endswith("  b` )\n     ^")


def test_deep_nesting_is_a_syntax_error_not_a_recursion_error():
    for text in ("(" * 5000 + "x" + ")" * 5000, "!" * 5000 + "x", "x" + "[x" * 3000, "x.(" + "*" * 5000 + "T)",
                 "x.(" + "[]" * 3000 + "T)", "len(" * 3000):
        assert "nesting deeper" in str(syntax_error(text))
    assert parse("(" * 50 + "x" + ")" * 50) == x


@pytest.mark.parametrize("text, canonical", [
    ("T", "T"),
    ("pkg . T", "pkg.T"),
    ("* pkg.T", "*pkg.T"),
    ("[ ] byte", "[]byte"),
    ("[0x10]int", "[16]int"),
    ("map[ string ] [ ]*T", "map[string][]*T"),
    ("chan int", "chan int"),
    ("chan<- int", "chan<-int"),
    ("<-chan int", "<-chan int"),
    ("chan (<-chan int)", "chan(<-chan int)"),
    ("chan <-chan int", "chan<-chan int"),  # Go reads this as chan<- (chan int)
    ("<-chan <-chan int", "<-chan<-chan int"),
    ("func()", "func()"),
    ("func(int, ...string) (bool, error)", "func(int,...string)(bool,error)"),
    ("func(int,) (error)", "func(int)error"),
    ("func() func() int", "func()func()int"),
    ("struct { }", "struct{}"),
    ("interface{}", "interface{}"),
    ("any", "any"),
    ("pkg.List[ int, *pkg.T ]", "pkg.List[int,*pkg.T]"),
    ("((*T))", "*T"),
])
def test_canonical_types(text, canonical):
    assert canonical_type(text) == canonical
    assert canonical_type(canonical) == canonical


def test_type_name_validation():
    assert str(TypeName("pkg.T", 2)) == "**pkg.T"
    for text, depth in [("*T", 0), ("map[ string]int", 0), ("", 0), ("1", 0), ("T", -1), ("T", True)]:
        with pytest.raises(ValueError):
            TypeName(text, depth)


def test_node_validation():
    for bad in (lambda: Ident("func"), lambda: Ident("true"), lambda: Ident("1x"), lambda: Ident(""),
                lambda: Selector(x, "~r0"), lambda: Selector(x, "map"), lambda: Call("foo", (x,)),
                lambda: Call("len", (x, y)), lambda: Call("len", ()), lambda: IntLit(2**64),
                lambda: IntLit(True), lambda: Unary("*", x), lambda: Binary("+", x, y), lambda: StringLit("s")):
        with pytest.raises((ValueError, TypeError)):
            bad()
    with pytest.raises(TypeError):
        Selector("x", "y")


def test_spans_and_equality():
    e = parse("(a).b == len(m[-1])")
    assert e.span == (0, 19)
    assert e.left.span == (0, 5) and e.left.operand.span == (1, 2)
    assert e.right.span == (9, 19) and e.right.args[0].index.span == (15, 17)
    assert e == parse("( ( a ) . b==len ( m [ - 1 ] ) )")  # spans are not part of equality
    with pytest.raises(AttributeError):
        e.op = "!="  # immutable


def test_unparse_examples():
    cases = {
        "( *p ).x": "(*p).x",
        "a&&(b||c)": "a && (b || c)",
        "(a&&b)||c": "a && b || c",
        "a == (b == c)": "a == (b == c)",
        "!(a)": "!a",
        "-(5)": "-(5)",
        "-(-x)": "-(-x)",
        "(5).x": "(5).x",
        "(-5)[0]": "(-5)[0]",
        "x.(* pkg . T)": "x.(*pkg.T)",
        "0x_FF": "255",
        '"\\x41\\u00e9\\xff\\x00\\u2028"': '"Aé\\xff\\x00\\u2028"',
        "`a\"b\\`": '"a\\"b\\\\"',
        "len( x )": "len(x)",
    }
    for text, canonical in cases.items():
        assert unparse(parse(text)) == canonical


def test_identifiers_and_conditions():
    e = parse('s.m[k].(*pkg.T).f == len(other) && !done || x.y["z"] != nil')
    assert identifiers(e) == {"s", "k", "other", "done", "x"}
    assert identifiers(parse("pkg.Global")) == {"pkg"}
    assert identifiers(parse('len("x") > 1')) == set()
    assert [type(n).__name__ for n in walk(parse("!a[b]"))] == ["Unary", "Index", "Ident", "Ident"]
    for text in ("a == b", "a && b", "a || b", "!a", "a < 1", "(a > 1)"):
        assert is_condition(parse(text)), text
    for text in ("a", "-a", "*a", "len(a)", "true", "a.b", "x.(T)"):
        assert not is_condition(parse(text)), text


# ----------------------------------------------------------------------------------------- strategies

def _join(a: str, b: str) -> str:
    """Canonical spacing: a space only between two word characters (Go would read one longer word)."""
    def word(c: str) -> bool:
        return c.isalnum() or c == "_"
    return f"{a} {b}" if word(a[-1]) and word(b[0]) else a + b


_RESERVED = {"break", "case", "chan", "const", "continue", "default", "defer", "else", "fallthrough", "for",
             "func", "go", "goto", "if", "import", "interface", "map", "package", "range", "return", "select",
             "struct", "switch", "type", "var", "true", "false", "nil"}
names = st.one_of(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True),
    st.sampled_from(["é", "日本", "x٣", "Ünïcode", "_"]),
).filter(lambda n: n not in _RESERVED)
root_names = st.one_of(names, st.from_regex(r"~[rp][0-9]", fullmatch=True))


def _func_type(parts) -> str:
    params, variadic, results = parts
    if variadic is not None:
        params = [*params, "..." + variadic]
    text = "func(" + ",".join(params) + ")"
    if len(results) == 1:
        return _join(text, results[0])
    return text + ("(" + ",".join(results) + ")" if results else "")


def _extend_types(inner):
    return st.one_of(
        inner.map(lambda t: "*" + t),
        inner.map(lambda t: "[]" + t),
        st.tuples(st.integers(0, 99), inner).map(lambda a: f"[{a[0]}]{a[1]}"),
        st.tuples(inner, inner).map(lambda a: f"map[{a[0]}]{a[1]}"),
        inner.map(lambda t: f"chan({t})" if t.startswith("<-") else _join("chan", t)),
        inner.map(lambda t: _join("<-chan", t)),
        inner.map(lambda t: _join("chan<-", t)),
        st.tuples(st.lists(inner, max_size=2), st.none() | inner, st.lists(inner, max_size=3)).map(_func_type),
        st.tuples(st.sampled_from(["List", "pkg.Map"]), st.lists(inner, min_size=1, max_size=2))
        .map(lambda a: a[0] + "[" + ",".join(a[1]) + "]"),
    )


go_types = st.recursive(
    st.sampled_from(["T", "int", "pkg.T", "main.Server", "any", "error", "struct{}", "interface{}", "é.Ω"]),
    _extend_types, max_leaves=6)


@st.composite
def type_names(draw) -> TypeName:  # composite: keeps the expression strategy's repr short
    text = draw(go_types)
    depth = len(text) - len(text.lstrip("*"))
    return TypeName(text[depth:], depth)


leaves = st.one_of(
    root_names.map(Ident),
    st.integers(-(2**63), 2**64 - 1).map(IntLit),
    st.binary(max_size=8).map(StringLit),
    st.text(max_size=6).map(lambda t: StringLit(t.encode())),
    st.booleans().map(BoolLit),
    st.just(NilLit()),
)


def _extend_exprs(inner):
    return st.one_of(
        st.tuples(inner, names).map(lambda a: Selector(*a)),
        inner.map(Deref),
        st.tuples(inner, inner).map(lambda a: Index(*a)),
        st.tuples(st.sampled_from(["len", "cap"]), inner).map(lambda a: Call(a[0], (a[1],))),
        st.tuples(inner, type_names()).map(lambda a: TypeAssert(*a)),
        st.tuples(st.sampled_from(["!", "-"]), inner).map(lambda a: Unary(*a)),
        st.tuples(st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "&&", "||"]), inner, inner)
        .map(lambda a: Binary(*a)),
    )


exprs = st.recursive(leaves, _extend_exprs, max_leaves=10)


# ----------------------------------------------------------------------------------------- properties

@FAST
@given(exprs)
def test_unparse_parse_round_trip(e):
    text = unparse(e)
    assert parse(text) == e
    assert unparse(parse(text)) == text  # canonical text is a fixed point


@FAST
@given(go_types)
def test_generated_types_are_canonical(text):
    assert canonical_type(text) == text
    assert canonical_type(text.replace(",", " , ").replace("[", " [ ").replace("(", "( ")) == text


@FAST
@given(exprs)
def test_node_spans_cover_their_source(e):
    text = unparse(e)
    for node in walk(parse(text)):
        start, end = node.span
        assert parse(text[start:end]) == node


@FAST
@given(st.text(max_size=40))
@example("(" * 2000)
@example('"\\')
@example("x.(func(")
@example("\ud800")
def test_arbitrary_text_only_raises_syntax_errors(text):
    check_only_syntax_errors(text)


def check_only_syntax_errors(text: str) -> None:
    try:
        e = parse(text)
    except ExpressionSyntaxError as err:
        assert 1 <= err.column <= len(text) + 1
        assert err.text == text and err.expected
        str(err)
    else:
        assert isinstance(e, Expr) and parse(unparse(e)) == e


token_soup = st.lists(st.sampled_from(
    ["x", "y", ".", "(", ")", "[", "]", "*", "!", "-", "==", "<", "&&", "||", "len", "cap", "foo", "1", "0x",
     '"a"', '"\\', "`", ",", " ", "map", "chan", "<-", "func", "...", "{", "}", "struct", "T", "~r0", "nil"]),
    max_size=25).map("".join)


@FAST
@given(token_soup)
def test_token_soup_only_raises_syntax_errors(text):
    check_only_syntax_errors(text)


@FAST
@given(exprs)
def test_trailing_garbage_is_reported_where_it_starts(e):
    text = unparse(e)
    err = syntax_error(text + " )")
    assert (err.column, err.expected) == (len(text) + 2, "end of input")


@FAST
@given(exprs)
def test_unclosed_call_expects_paren_at_end(e):
    text = "len(" + unparse(e)
    err = syntax_error(text)
    assert (err.column, err.expected) == (len(text) + 1, '")"')


@FAST
@given(exprs, st.text(alphabet=st.characters(blacklist_characters='"\\\n', blacklist_categories=("Cs",)),
                      max_size=8))
def test_unterminated_string_is_reported_at_its_quote(e, body):
    prefix = unparse(e) + ' == '
    err = syntax_error(prefix + '"' + body)
    assert err.column == len(prefix) + 1
    assert "closing" in err.expected


@FAST
@given(exprs, st.sampled_from("cdeghijklmopqswyz'"))
def test_bad_escape_is_reported_at_its_backslash(e, letter):
    prefix = unparse(e) + ' != "ok'
    err = syntax_error(prefix + "\\" + letter + '"')
    assert err.column == len(prefix) + 1


@FAST
@given(st.binary(max_size=40))
def test_string_literals_round_trip_any_bytes(value):
    assert parse(unparse(StringLit(value))) == StringLit(value)


@FAST
@given(st.integers(0, 2**64 - 1), st.sampled_from(["d", "x", "o", "0", "b"]), st.booleans())
def test_int_literal_spellings(value, base, underscores):
    digits = {"d": str(value), "x": f"{value:x}", "o": f"{value:o}", "0": f"{value:o}", "b": f"{value:b}"}[base]
    if underscores and len(digits) > 1:
        digits = "_".join(digits)
    prefix = {"d": "", "x": "0x", "o": "0o", "0": "0", "b": "0b"}[base]
    if base == "d" and underscores and value < 10:
        digits = str(value)
    assert parse(prefix + digits) == IntLit(value)


@FAST
@given(st.lists(st.sampled_from(["T", "pkg", ".", "*", "[", "]", "3", "map", "chan", "<-", "func", "(", ")", ",",
                                 "...", "struct", "interface", "{", "}", " ", "~r0", "int"]), max_size=20).map("".join))
def test_canonical_type_only_raises_syntax_errors(text):
    try:
        canonical = canonical_type(text)
    except ExpressionSyntaxError as err:
        assert 1 <= err.column <= len(text) + 1
    else:
        assert canonical_type(canonical) == canonical
