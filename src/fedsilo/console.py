"""What fedsilo tells its user besides results: warnings, one line each, on stderr."""

from __future__ import annotations

import sys
from pathlib import Path


def warn(message: str) -> None:
    """A problem that does not stop the run, in one line."""
    print(f"fedsilo: warning: {message}", file=sys.stderr, flush=True)


def shown(path: Path | str) -> str:
    """A path as a user would type it: relative to the working directory when inside it."""
    p = Path(path)
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)
