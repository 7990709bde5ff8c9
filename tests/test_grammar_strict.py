"""The grammar file: builds as strict LALR (no conflicts, no terminal collisions) and is the
one the package reads."""
from pathlib import Path

from lark import Lark

from compose.language import grammar

REPOSITORY_GRAMMAR = Path(__file__).resolve().parents[1] / "grammar" / "compose.lark"


def test_grammar_builds_as_strict_lalr():
    # strict: shift/reduce conflicts and regex collisions between terminals are errors
    # (collision checks need the `interegular` package).
    Lark(grammar.grammar_text(), parser="lalr", strict=True)
    grammar.build_parser(strict=True)


def test_package_reads_the_repository_grammar():
    assert grammar.grammar_text() == REPOSITORY_GRAMMAR.read_text(encoding="utf-8")


def test_parser_is_built_once():
    assert grammar.parser() is grammar.parser()
