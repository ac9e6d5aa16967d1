"""Sections of a markdown file (README, RESULTS.md, BENCHMARKS.md) that a command rewrites, leaving the rest alone.

A section sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``; the command that writes it owns it.
"""

from __future__ import annotations

import os
from pathlib import Path

from common.run import atomic_write_text

__all__ = ["write_section", "section_markers"]


def section_markers(name: str) -> tuple[str, str]:
    """The start and end markers of section ``name``."""
    if not name or any(c in name for c in "<>\n") or "--" in name:
        raise ValueError(f"section name must be non-empty without '<', '>', '--' or newlines, got {name!r}")
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def write_section(path: str | os.PathLike, name: str, text: str) -> None:
    """Put ``text`` between the markers of section ``name`` in ``path`` (appended, or the file created, if absent).

    Raises:
        ValueError: the file holds only one of the two markers (fix it by hand).
    """
    path = Path(path)
    start, end = section_markers(name)
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.is_file() else ""
    if start in old and end in old and old.index(start) < old.index(end):
        rest = old[old.index(end) + len(end) :].lstrip("\n")
        new = old[: old.index(start)] + block + ("\n" + rest if rest else "")  # one blank line before what follows
    elif start in old or end in old:
        raise ValueError(f"{path}: only one of the markers of section {name!r} is present; fix the file by hand")
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + block
    atomic_write_text(path, new)
