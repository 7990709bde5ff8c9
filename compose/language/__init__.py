"""The composition language: text such as ``"p(class=7) ** 3 / p ** 2 | style=1 @ 2"`` read
into the same expression tree that the Python operators build (see ``grammar/compose.lark``)."""
from ..errors import CompositionError
from .parser import bind, parse

__all__ = ["parse", "bind", "CompositionError"]
