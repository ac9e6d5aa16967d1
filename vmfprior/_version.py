"""The package version, single-sourced from pyproject.toml.

A source checkout (the package directory beside a pyproject.toml that names it) reads the file itself, so the
version is right even when an older install of the package is also on the path; an installed package reads its
metadata, which setuptools wrote from the same file.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

__all__ = ["__version__"]

_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _from_pyproject(path: Path) -> str | None:
    """The [project] version in ``path`` when that project is vmfprior, else None."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        import tomllib  # Python >= 3.11
    except ModuleNotFoundError:  # Python 3.10: the two keys are plain 'key = "value"' lines of [project]
        section = re.search(r"^\[project\]\s*$(.*?)(?=^\[|\Z)", text, re.MULTILINE | re.DOTALL)
        if section is None:
            return None
        fields = dict(re.findall(r'^(name|version)\s*=\s*"([^"]*)"', section.group(1), re.MULTILINE))
    else:
        try:
            fields = tomllib.loads(text).get("project", {})
        except tomllib.TOMLDecodeError:
            return None
    return fields.get("version") if fields.get("name") == "vmfprior" else None


def _version() -> str:
    found = _from_pyproject(_PYPROJECT)
    if found is not None:
        return found
    try:
        return metadata.version("vmfprior")
    except metadata.PackageNotFoundError:  # neither a checkout nor installed (e.g. copied into another tree)
        return "0+unknown"


__version__ = _version()
