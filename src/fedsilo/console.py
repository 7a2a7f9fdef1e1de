"""What fedsilo tells its user besides results: warnings, one line each, on stderr."""

from __future__ import annotations

import sys


def warn(message: str) -> None:
    """A problem that does not stop the run, in one line."""
    print(f"fedsilo: warning: {message}", file=sys.stderr, flush=True)
