"""The composition language: precedence, round trip, binding, and every error message."""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compose.errors import CompositionError, Span
from compose.expr import Condition, Guidance, Leaf, Mixture, Power, Product, Quotient
from compose.language import bind, parse
from compose.language.parser import SYNTAX_ERRORS


class Component:
    """A stand-in component: only the attributes binding looks at."""

    is_classifier = False

    def __init__(self, name, has_log_density=True):
        self.name = name
        self.has_log_density = has_log_density

    def __repr__(self):
        return f"Component({self.name!r})"


class Classifier:
    is_classifier = True
    has_log_density = True


a, b, c, p, q = (Leaf(n) for n in "abcpq")


def cond(variable, value):
    return Condition(variable, value)


# ------------------------------------------------------------------------------------------
# Precedence and associativity


@pytest.mark.parametrize("text, tree", [
    ("a * b ** 2 / c | class=7",
     Guidance(Quotient(Product(a, Power(b, 2)), c), (cond("class", 7),))),
    # ** binds tighter than * and /
    ("a * b ** 2", Product(a, Power(b, 2))),
    ("a ** 2 * b", Product(Power(a, 2), b)),
    ("a / b ** 2", Quotient(a, Power(b, 2))),
    ("a ** 2 / b", Quotient(Power(a, 2), b)),
    # * and / share a level and associate to the left
    ("a / b / c", Quotient(Quotient(a, b), c)),
    ("a / b * c", Product(Quotient(a, b), c)),
    ("a * b / c", Quotient(Product(a, b), c)),
    ("a * b * c", Product(Product(a, b), c)),
    ("a / (b / c)", Quotient(a, Quotient(b, c))),
    ("a * (b * c)", Product(a, Product(b, c))),
    # exponents: negative, decimal, scientific; the base is an atom
    ("a ** -1", Power(a, -1.0)),
    ("a ** 1e-3", Power(a, 0.001)),
    ("a ** -2.5E+1", Power(a, -25.0)),
    ("a ** .5", Power(a, 0.5)),
    ("a ** 2.", Power(a, 2.0)),
    ("(a ** 2) ** 3", Power(Power(a, 2), 3)),
    ("(a * b) ** 0.5", Power(Product(a, b), 0.5)),
    # mixture: looser than product, n-ary, explicit nesting kept
    ("a * b + c", Mixture((Product(a, b), c))),
    ("a + b / c", Mixture((a, Quotient(b, c)))),
    ("a + b ** 2 + c", Mixture((a, Power(b, 2), c))),
    ("(a + b) + c", Mixture((Mixture((a, b)), c))),
    ("a + (b + c)", Mixture((a, Mixture((b, c))))),
    ("(a + b) * c", Product(Mixture((a, b)), c)),
    # guidance: loosest, several conditions, optional scale
    ("a + b | class=7", Guidance(Mixture((a, b)), (cond("class", 7),))),
    ("a * b | class=7, style=2 @ 3.0",
     Guidance(Product(a, b), (cond("class", 7), cond("style", 2)), 3.0)),
    ("a | class=7 @ -0.5", Guidance(a, (cond("class", 7),), -0.5)),
    ("(a | class=7) * b", Product(Guidance(a, (cond("class", 7),)), b)),
    ("(a | class=7) | style=2",
     Guidance(Guidance(a, (cond("class", 7),)), (cond("style", 2),))),
    # conditional components (classifier-free guidance)
    ("p(class=7) ** 3 / p ** 2",
     Quotient(Power(Leaf("p", conditions=(("class", 7),)), 3), Power(p, 2))),
    ("p(class=7, style=2)", Leaf("p", conditions=(("class", 7), ("style", 2)))),
])
def test_precedence(text, tree):
    assert parse(text) == tree


def test_parser_builds_what_the_python_operators_build():
    assert parse("a * b ** 0.5 / c + q") == a * b ** 0.5 / c + q
    assert parse("(p * q) ** 2 | class=7 @ 3") == ((p * q) ** 2).guide(cond("class", 7), scale=3)


def test_condition_values_keep_their_types():
    leaf = parse('p(i=7, n=-1, f=7.0, e=1e3, s=foo, t="two words", u="a\\"b\\\\c", x="")')
    values = dict(leaf.conditions)
    assert values == {"i": 7, "n": -1, "f": 7.0, "e": 1000.0, "s": "foo", "t": "two words",
                      "u": 'a"b\\c', "x": ""}
    assert [type(values[k]) for k in "infestux"] == [int, int, float, float, str, str, str, str]


def test_single_quotes_mean_what_double_quotes_mean():
    # 'a cat' is the natural form inside a double-quoted shell argument
    assert parse("p(prompt='a cat')") == parse('p(prompt="a cat")')
    assert parse("p | style='a b'") == parse('p | style="a b"')
    # the same escapes: a backslash takes the next character literally
    leaf = parse("p(s='it\\'s', t='say \"hi\"', u='a\\\\b', v='', w='x\\y')")
    assert dict(leaf.conditions) == {"s": "it's", "t": 'say "hi"', "u": "a\\b", "v": "",
                                     "w": "xy"}
    # a double quote inside single quotes needs no escape, and the other way round
    assert dict(parse("p(s='\"', t=\"'\")").conditions) == {"s": '"', "t": "'"}


@pytest.mark.parametrize("text, canonical", [
    ("p(prompt='a cat')", 'p(prompt="a cat")'),
    ("p(prompt='it\\'s')", 'p(prompt="it\'s")'),
    ("p(prompt='say \"hi\"')", 'p(prompt="say \\"hi\\"")'),
    ("p(prompt='a\\\\b')", 'p(prompt="a\\\\b")'),
    ("p | style='x'", "p | style=x"),
])
def test_single_quoted_strings_print_canonically(text, canonical):
    tree = parse(text)
    assert str(tree) == canonical  # str() always writes double quotes
    assert parse(str(tree)) == tree


def test_comments_and_newlines_are_whitespace():
    text = """
        # classifier-free guidance, written over several lines
        p(class=7) ** 3      # conditional model, weight 3
          / p ** 2           # unconditional, weight -2
        | style="a # not a comment
        b"                   # a string may span lines
    """
    expected = parse('p(class=7) ** 3 / p ** 2 | style="a # not a comment\n        b"')
    assert parse(text) == expected


def test_leaves_and_conditions_know_where_they_were_written():
    tree = parse("p *\n  q(class=7) | style=2")
    assert tree.expr.left.span == Span(1, 1, 0, 1)
    assert tree.expr.right.span == Span(2, 3, 6, 16)
    assert tree.conditions[0].span == Span(2, 16, 19, 26)


# ------------------------------------------------------------------------------------------
# Round trip: parse(str(e)) == e


CORPUS = [
    "p", "p * q", "p / q", "p ** 2", "p ** 0.5", "p ** -1", "p ** 0.001", "p ** 1e-05",
    "p ** 1e+16", "a * b ** 2 / c | class=7", "a / b / c", "a / (b / c)", "a * (b / c)",
    "(a ** 2) ** 3", "(a * b) ** 0.5", "a + b + c", "(a + b) + c", "a + (b + c)",
    "(a + b) * c", "a * b + c / d", "a + b | class=7", "(a | class=7) + b",
    "(a | class=7) | style=2", "p | class=7, style=2 @ 3", "p | class=7 @ -2.5",
    "p(class=7) ** 3 / p ** 2", "p(class=7.0, style=x)", 'p(tag="two words", q="\\"\\\\")',
    "p(class=-1) | class=1.5 @ 0.5", "(p + q) ** 2 / r(t=1) | y=z",
]


@pytest.mark.parametrize("text", CORPUS)
def test_round_trip_corpus(text):
    tree = parse(text)
    assert parse(str(tree)) == tree
    assert str(tree) == text  # the corpus is written canonically


def test_canonical_printing_normalises_spacing_and_parentheses():
    assert str(parse("((a))*(b**2)/c|class=7,style=x@1.0")) == "a * b ** 2 / c | class=7, style=x"


NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True)
REALS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e-3, -2.5e1, 1e16, -1e-300, 5e-324, -0.0, 1.5e300, 123456789012345678.0]),
    st.integers(-10 ** 6, 10 ** 6).map(float))
STRINGS = st.one_of(st.text(max_size=8), st.text(alphabet='\\"#\n =ab', max_size=6))
VALUES = st.one_of(st.integers(), REALS, NAMES, STRINGS)
PAIRS = st.dictionaries(NAMES, VALUES, min_size=1, max_size=3).map(lambda d: tuple(d.items()))
LEAVES = st.builds(lambda name, conditions: Leaf(name, conditions=conditions),
                   NAMES, st.one_of(st.just(()), PAIRS))


def _extend(children):
    conditions = PAIRS.map(lambda pairs: tuple(Condition(v, x) for v, x in pairs))
    return st.one_of(
        st.builds(Product, children, children),
        st.builds(Quotient, children, children),
        st.builds(Power, children, REALS),
        st.lists(children, min_size=2, max_size=4).map(lambda cs: Mixture(tuple(cs))),
        st.builds(Guidance, children, conditions, REALS))


TREES = st.recursive(LEAVES, _extend, max_leaves=10)


@settings(max_examples=200, deadline=None)
@given(TREES)
def test_round_trip_random_trees(tree):
    text = str(tree)
    assert parse(text) == tree
    assert str(parse(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="pq()*/+|@=,.#\"'\n 07e-$", max_size=16))
def test_nothing_but_composition_errors_escape(text):
    try:
        parse(text)
    except CompositionError as error:
        assert error.span is not None and error.source == text
        assert str(error).startswith(f"line {error.span.line}, column {error.span.column}: ")


# ------------------------------------------------------------------------------------------
# Binding


def test_unbound_without_components():
    tree = parse("p(class=7) ** 3 / p ** 2 | style=1")
    assert all(leaf.component is None for leaf in tree.leaves())
    assert tree.conditions[0].classifier is None


def test_mapping_binds_components_and_classifiers():
    model, clf = Component("p"), Classifier()
    tree = parse("p(class=7) ** 3 / p ** 2 | class=1 @ 2", {"p": model, "class": clf})
    assert [leaf.component for leaf in tree.leaves()] == [model, model]
    assert tree.conditions[0].classifier is clf
    # equal to the same tree built with Python operators from bound leaves
    leaf = Leaf("p", model)
    assert tree == (leaf.given({"class": 7}) ** 3 / leaf ** 2).guide(
        Condition("class", 1, clf), scale=2)
    # identity of the bound objects is part of equality
    assert tree != parse(str(tree), {"p": Component("p"), "class": clf})
    assert parse(str(tree), {"p": model, "class": clf}) == tree


def test_keywords_bind_too():
    m, n = Component("p"), Component("q")
    assert parse("p * q ** 0.5", p=m, q=n) == Leaf("p", m) * Leaf("q", n) ** 0.5
    assert parse("p * q", {"p": m}, q=n) == Leaf("p", m) * Leaf("q", n)


def test_bind_a_parsed_tree_later():
    m, clf = Component("p"), Classifier()
    tree = bind(parse("p + p(class=2) | class=7"), {"p": m, "class": clf})
    assert tree == (Leaf("p", m) + Leaf("p", m).given({"class": 2})).guide(Condition("class", 7, clf))


def test_bind_keeps_what_is_already_bound():
    m, n = Component("p"), Component("q")
    tree = bind(Leaf("p", m) * Leaf("q"), {"q": n})
    assert tree == Leaf("p", m) * Leaf("q", n)


def test_a_name_bound_to_an_expression_is_substituted():
    m, n, r = Component("m"), Component("n"), Component("r")
    prior = Leaf("m", m) * Leaf("n", n) ** 0.5
    tree = parse("prior / lik", {"prior": prior, "lik": r})
    assert tree == Quotient(prior, Leaf("lik", r))
    assert parse("x(class=3)", {"x": Leaf("m", m)}) == Leaf("m", m, (("class", 3),))


@settings(max_examples=100, deadline=None)
@given(TREES)
def test_round_trip_bound_random_trees(tree):
    names = {leaf.name for leaf in tree.leaves()}
    mapping = {name: Component(name) for name in names}

    def variables(node):
        own = [c.variable for c in getattr(node, "conditions", ()) if isinstance(c, Condition)]
        return own + [v for child in node.children() for v in variables(child)]

    mapping.update({v: Classifier() for v in variables(tree) if v not in names})
    if any(v in names for v in variables(tree)):
        return  # a name cannot be both a component and a classifier
    bound = parse(str(tree), mapping)
    assert parse(str(bound), mapping) == bound


# ------------------------------------------------------------------------------------------
# Errors: the full rendered message


def message(text, *args, **kwargs):
    with pytest.raises(CompositionError) as caught:
        parse(text, *args, **kwargs)
    return str(caught.value)


MODEL, OTHER = Component("model"), Component("other")
SCORE_ONLY = Component("score", has_log_density=False)


@pytest.mark.parametrize("text, rendered", [
    ("(p * q",
     "line 1, column 7: missing ')'\n  (p * q\n        ^"),
    ("p(class=7",
     "line 1, column 10: missing ')'\n  p(class=7\n           ^"),
    ("p * q)",
     "line 1, column 6: unmatched ')'\n  p * q)\n       ^"),
    ("(p * q))",
     "line 1, column 8: unmatched ')'\n  (p * q))\n         ^"),
    ("p *",
     "line 1, column 4: missing operand after '*'\n  p *\n     ^"),
    ("p / )",
     "line 1, column 5: missing operand after '/'\n  p / )\n      ^"),
    ("p + ",
     "line 1, column 4: missing operand after '+'\n  p + \n     ^"),
    ("* p",
     "line 1, column 1: expected a component before '*'\n  * p\n  ^"),
    ("p ** ",
     "line 1, column 5: the exponent after '**' must be a number, e.g. p ** 0.5; "
     "found end of input\n  p ** \n      ^"),
    ("p ** q",
     "line 1, column 6: the exponent after '**' must be a number, e.g. p ** 0.5; found 'q'\n"
     "  p ** q\n       ^"),
    ("p ** 2 ** 3",
     "line 1, column 8: the base of '**' must be a name or in parentheses: write (p ** 2) ** 3\n"
     "  p ** 2 ** 3\n         ^^"),
    ("p q",
     "line 1, column 3: expected an operator (*, /, **, + or |) before 'q'\n  p q\n    ^"),
    ("7",
     "line 1, column 1: numbers appear only as exponents (p ** 0.5), guidance scales (@ 3) and "
     "condition values (class=7); found '7'\n  7\n  ^"),
    ("p | class=7 | style=2",
     "line 1, column 13: guidance cannot be chained: give several conditions to one '|' "
     "(p | class=7, style=2) or add parentheses ((p | class=7) | style=2)\n"
     "  p | class=7 | style=2\n              ^"),
    ("p |",
     "line 1, column 4: guidance needs a condition after '|', e.g. p | class=7; "
     "found end of input\n  p |\n     ^"),
    ("p | class=7 @ big",
     "line 1, column 15: the guidance scale after '@' must be a number, e.g. @ 3.0; "
     "found 'big'\n  p | class=7 @ big\n                ^^^"),
    ("p(class)",
     "line 1, column 8: expected a condition variable=value, e.g. class=7; found ')'\n"
     "  p(class)\n         ^"),
    ("p | class=7, class=8",
     "line 1, column 14: guidance: condition 'class' is given twice\n"
     "  p | class=7, class=8\n               ^^^^^^^"),
    ("p(class=1, class=2)",
     "line 1, column 12: 'p': condition 'class' is given twice\n"
     "  p(class=1, class=2)\n             ^^^^^^^"),
    ("",
     "line 1, column 1: empty composition: expected a component, e.g. p * q\n  \n  ^"),
    ("   \n  ",
     "line 1, column 1: empty composition: expected a component, e.g. p * q\n     \n  ^"),
    ("# nothing here\n",
     "line 1, column 1: empty composition: expected a component, e.g. p * q\n"
     "  # nothing here\n  ^"),
    ("p $ q",
     "line 1, column 3: unexpected character '$'\n  p $ q\n    ^"),
    ("p(tag='open",
     "line 1, column 7: unterminated string: missing closing \"'\"\n  p(tag='open\n        ^"),
    ('p(tag="open',
     "line 1, column 7: unterminated string: missing closing '\"'\n  p(tag=\"open\n        ^"),
    ("p ** 1e999",
     "line 1, column 6: the exponent must be finite, got 1e999\n  p ** 1e999\n       ^^^^^"),
    # errors report the line they are on
    ("p *   # first line\n  q **\n\n# trailing comment\n",
     "line 2, column 7: the exponent after '**' must be a number, e.g. p ** 0.5; "
     "found end of input\n    q **\n        ^"),
    ("p *\n  (q $ r)",
     "line 2, column 6: unexpected character '$'\n    (q $ r)\n       ^"),
])
def test_syntax_error_messages(text, rendered):
    assert message(text) == rendered


def test_unknown_names_are_reported_together():
    assert message("model * modle ** 2 / prior | class=7", {"model": MODEL, "other": OTHER}) == (
        "line 1, column 9: unknown names 'modle' (did you mean 'model'?), 'prior'; "
        "known names: model, other\n"
        "  model * modle ** 2 / prior | class=7\n"
        "          ^^^^^")
    assert message("p", {}) == "line 1, column 1: unknown name 'p'; known names: none\n  p\n  ^"


def test_guidance_needs_a_classifier():
    assert message("model | class=7", {"model": MODEL}) == (
        "line 1, column 9: guidance on 'class' needs a classifier bound to 'class'\n"
        "  model | class=7\n          ^^^^^^^")
    assert message("model | class=7", {"model": MODEL, "class": OTHER}) == (
        "line 1, column 9: guidance on 'class' needs a classifier bound to 'class', "
        "not a Component\n  model | class=7\n          ^^^^^^^")


def test_a_classifier_is_not_a_factor():
    assert message("model * clf", {"model": MODEL, "clf": Classifier()}) == (
        "line 1, column 9: 'clf' is bound to a classifier, which guides a composition but is "
        "not a factor of it: write expr | clf=value\n  model * clf\n          ^^^")


def test_mixture_refuses_score_only_components():
    assert message("model + (other * score ** 2)",
                   {"model": MODEL, "other": OTHER, "score": SCORE_ONLY}) == (
        "line 1, column 18: mixture needs log-densities: 'score' is a score-only component; "
        "use analytic or energy components in a mixture\n"
        "  model + (other * score ** 2)\n                   ^^^^^")
    # a product of score-only components is fine
    parse("score * score ** 2", {"score": SCORE_ONLY})


def test_name_bound_twice():
    assert message("p", {"p": MODEL}, p=OTHER) == "'p' is bound twice: in the mapping and as a keyword"


def test_not_a_string():
    assert message(42) == "a composition must be a string, got int"


def test_composition_error_is_a_value_error():
    with pytest.raises(ValueError):
        parse("p *")


def _label_pattern(label):
    return re.compile(".+".join(re.escape(part) for part in label.split("{token}")) + r"\Z")


@pytest.mark.parametrize("label, example", [
    (label, example) for label, examples in SYNTAX_ERRORS.items() for example in examples])
def test_every_error_example_gets_its_label(label, example):
    with pytest.raises(CompositionError) as caught:
        parse(example)
    assert _label_pattern(label).match(caught.value.message), caught.value.message
    assert caught.value.span is not None
