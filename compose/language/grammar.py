"""The grammar of the composition language and the LALR parser built from it.

The grammar lives in one file, ``grammar/compose.lark`` at the top of the repository. A wheel
ships it inside the package as ``compose/_grammar/compose.lark`` (pyproject maps the folder
``grammar`` to the package ``compose._grammar``); a source checkout reads it from the
repository. The parser is built on first use and cached.
"""
from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from lark import Lark

GRAMMAR_FILE = "compose.lark"

# Where a source checkout keeps the grammar: <repo>/grammar/compose.lark.
_CHECKOUT_GRAMMAR = Path(__file__).resolve().parents[2] / "grammar" / GRAMMAR_FILE


def grammar_text() -> str:
    """The grammar source: from the installed package if it is there, else from the checkout."""
    try:
        installed = resources.files("compose").joinpath("_grammar", GRAMMAR_FILE)
        if installed.is_file():
            return installed.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError, TypeError):
        pass
    if _CHECKOUT_GRAMMAR.is_file():
        return _CHECKOUT_GRAMMAR.read_text(encoding="utf-8")
    raise FileNotFoundError(
        f"composition grammar not found: neither compose/_grammar/{GRAMMAR_FILE} in the "
        f"installed package nor {_CHECKOUT_GRAMMAR}")


def build_parser(**options) -> Lark:
    """A new LALR parser for the grammar; `options` go to `lark.Lark` (e.g. ``strict=True``)."""
    # A basic (context-free) lexer suffices, since every terminal is told apart by its first
    # character; with it a misplaced token is always a parser error, which the error labels
    # (parser.SYNTAX_ERRORS) match by parser state.
    settings = dict(parser="lalr", lexer="basic", propagate_positions=True, maybe_placeholders=True)
    settings.update(options)
    return Lark(grammar_text(), **settings)


@functools.lru_cache(maxsize=None)
def parser() -> Lark:
    """The shared parser, built once on first use. It holds no per-call state."""
    return build_parser()
