"""Progress bars on a terminal, not in logs.

Every long loop (the annealed sampler, training) takes ``progress``: True shows a tqdm bar on
stderr, False shows none, and None (the default) shows one only when stderr is a terminal, so
a run whose output goes to a file or a pipe writes no carriage-return updates into it.
"""
from __future__ import annotations

import sys
from typing import Optional


def wants_progress(progress: Optional[bool]) -> bool:
    """Whether to show a bar: `progress` when it is a bool, else whether stderr is a terminal."""
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        try:
            return bool(isatty()) if callable(isatty) else False
        except (ValueError, OSError):          # a closed or detached stream
            return False
    if not isinstance(progress, bool):
        raise ValueError(f"progress: must be True, False or None (show on a terminal), got {progress!r}")
    return progress


class _NoBar:
    """The tqdm methods the loops use, doing nothing."""

    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def close(self):
        pass


def progress_bar(total: int, desc: str, progress: Optional[bool], unit: str = "it"):
    """A tqdm bar over `total` steps on the current stderr, or a stand-in that does nothing."""
    if not wants_progress(progress):
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit=unit, leave=False, file=sys.stderr)
