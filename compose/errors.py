"""One exception family for compositions: syntax and meaning errors with a source span.

A `CompositionError` is a `ValueError`. When it knows where in a composition string the
problem lies it renders as::

    line 1, column 9: unknown name 'p3' (known: p1, p2)
      p1 * p2 / p3
                ^^

Without a source it renders as the bare message.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Span:
    """A region of a source string: 1-based line and column, 0-based character offsets."""

    line: int
    column: int
    start: int
    end: int


class CompositionError(ValueError):
    """Bad composition: a syntax error, an unknown name, or a composition with no meaning.

    Args:
        message: what is wrong, phrased so a person can act on it.
        source: the composition text, when the error comes from a string.
        span: where in `source` the problem is.
    """

    def __init__(self, message: str, source: Optional[str] = None, span: Optional[Span] = None):
        self.message = message
        self.source = source
        self.span = span
        super().__init__(self.render())

    def render(self) -> str:
        if self.source is None or self.span is None:
            return self.message
        lines = self.source.split("\n") or [""]
        line_text = lines[self.span.line - 1] if 0 < self.span.line <= len(lines) else ""
        line_text = line_text.rstrip("\r")  # text with \r\n line ends
        width = max(1, min(self.span.end - self.span.start, len(line_text) - self.span.column + 1))
        # Keep the line's tabs in the indent so the caret lines up however tabs are shown.
        indent = "".join(c if c == "\t" else " " for c in line_text[:self.span.column - 1])
        caret = indent.ljust(self.span.column - 1) + "^" * width
        return (
            f"line {self.span.line}, column {self.span.column}: {self.message}\n"
            f"  {line_text}\n  {caret}"
        )


class UnknownKeywordError(CompositionError, TypeError):
    """A keyword of `compile` that is neither an option nor a name in the composition.

    A CompositionError like every bad composition, and a TypeError, as Python raises for an
    unexpected keyword argument.
    """
