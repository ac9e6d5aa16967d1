"""One way to build a command's config: a dataclass whose fields carry their help, and argparse made from it.

Each command declares one dataclass; each field says its help with :func:`option`::

    @dataclass
    class TrainConfig:
        learning_rate: float = option(1e-3, "Adam step size")
        heads: tuple[str, ...] = option(("linear",), "heads to compare", choices=("linear", "random"))

    config = parse_config(TrainConfig, argv, prog="python -m vae.train", presets=PRESETS)

Values come, lowest first, from the dataclass defaults, ``--preset NAME``, ``--config FILE`` (a JSON object of
keys, or a run's config.json) and the flags typed. Every mistake names the flag as the user typed it
(``--num-validation``, not ``num_validation``) and suggests the nearest valid one.

The names below mean the same thing in every command (:data:`GLOSSARY`); a command that needs one of these
concepts uses this name and no other.

This module and :mod:`common.cli` import neither torch nor numpy, and neither do the config modules of the
commands (``vae.config``, ``gan.config``, ``ckd.config``, ...): a command answers ``--help`` and a mistyped flag
with :func:`answer_early` before it imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
import types
import typing
from pathlib import Path

from common.cli import USER_ERRORS, ArgumentParser, UserError

__all__ = [
    "GLOSSARY",
    "INVOCATION_KEYS",
    "SCHEDULES",
    "ConfigError",
    "answer_early",
    "build_parser",
    "check_choice",
    "check_positive",
    "config_from_dict",
    "flag",
    "option",
    "parse_config",
    "read_config_file",
]

GLOSSARY = {
    "data": "the dataset's .npz file",
    "out": "the run folder a command writes",
    "run": "a run folder a command reads (written by a trainer)",
    "learning_rate": "the optimizer's (initial) step size",
    "epochs": "passes over the training set (the run's length; it may grow on --resume)",
    "stop_after": "stop after this epoch or iteration, to continue later with --resume",
    "resume": "continue the run in --out exactly from its last checkpoint",
    "seed": "seeds initialization, shuffling and sampling",
    "cpu": "use the CPU even when a GPU is present",
    "progress": "show a progress bar",
    "threads": "torch CPU threads (default 1, or OMP_NUM_THREADS when set; more pays only on an idle machine)",
}
"""The one name of each concept shared by commands, and what it means."""

INVOCATION_KEYS = ("out", "run", "resume", "progress", "cpu", "threads", "stop_after", "figures")
"""Config keys that say how a run is invoked, not what it computes: they may differ on resume (also
``common.run.INVOCATION_KEYS``)."""
SCHEDULES = ("constant", "cosine", "linear", "step")
"""The learning-rate schedules of ``common.run.learning_rate_factor`` (also ``common.run.SCHEDULES``)."""


class ConfigError(UserError):
    """A bad flag, config file or value; the message names the flag as typed."""


def option(
    default=dataclasses.MISSING,
    help: str = "",
    *,
    choices=None,
    default_factory=dataclasses.MISSING,
    positional: bool = False,
):
    """A dataclass field with its ``--help`` text (and optionally its allowed values).

    Args:
        default: the default value (tuples for sequences: dataclass defaults must be immutable); leave it out for a
            required value.
        help: one line saying what the option does; required (a test checks every command).
        choices: allowed values (for sequence options: allowed items).
        default_factory: as for ``dataclasses.field``.
        positional: a positional argument (``prog FILE ...``) instead of ``--name``.
    """
    if not help or not help.strip():
        raise ValueError("option() needs a help text")
    metadata = {"help": help, "choices": tuple(choices) if choices is not None else None, "positional": positional}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag(name: str) -> str:
    """The command-line spelling of a config key: ``num_validation`` -> ``--num-validation``."""
    return "--" + name.replace("_", "-")


def _field_kind(annotation) -> tuple[type, bool, bool]:
    """``(scalar type, is_sequence, is_optional)`` of a field annotation."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if len(args) != 1:
            raise TypeError(f"unsupported config field type {annotation}")
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        inner = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return (inner[0] if inner else str), True, optional
    return annotation, False, optional


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _suggest(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


class _ConfigParser(ArgumentParser):
    """Errors name the flag and suggest the nearest one."""

    def error(self, message):
        raise ConfigError(message)


def build_parser(
    config_cls: type, prog: str, description: str = "", presets: dict | None = None, config_file: bool = True
) -> argparse.ArgumentParser:
    """An argparse parser with ``--preset`` (when ``presets``), ``--config`` and one ``--key`` per field.

    bool fields become ``--key/--no-key``; sequence fields take one or more values; ``Optional[X]`` fields take an
    X (and ``none`` for None).

    Args:
        config_cls: the command's dataclass (fields made with :func:`option`).
        prog: the command as a user types it, e.g. "python -m vae.train".
        description: the first line of ``--help``.
        presets: ``{name: {key: value}}`` named sets of defaults.
        config_file: whether to offer ``--config FILE``.
    """
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config_cls must be a dataclass, got {config_cls!r}")
    parser = _ConfigParser(prog=prog, description=description, allow_abbrev=False)
    if presets:
        parser.add_argument(
            "--preset",
            choices=sorted(presets),
            default=None,
            help="a named set of defaults, overridden by --config and by flags: " + ", ".join(sorted(presets)),
        )
    if config_file:
        parser.add_argument(
            "--config",
            default=None,
            metavar="FILE",
            help="JSON file of config keys (or a run's config.json), overridden by flags",
        )
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        scalar, sequence, optional = _field_kind(hints[field.name])
        default = _default(field)
        text = field.metadata.get("help", "")
        suffix = "(required)" if default is dataclasses.MISSING else f"(default: {_shown(default)})"
        kwargs: dict[str, typing.Any] = {"dest": field.name, "help": f"{text} {suffix}".strip() if text else ""}
        choices = field.metadata.get("choices")
        if scalar is bool and not sequence:
            parser.add_argument(
                flag(field.name), action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, **kwargs
            )
            continue
        kwargs["type"] = _converter(scalar, optional, field.name, choices)
        kwargs["default"] = argparse.SUPPRESS
        kwargs["metavar"] = scalar.__name__.upper() if scalar in (int, float) else field.name.upper()
        if sequence:
            kwargs["nargs"] = "+"
        if field.metadata.get("positional"):
            kwargs.pop("dest")
            kwargs["metavar"] = field.name.upper()
            if default is not dataclasses.MISSING:
                kwargs["nargs"] = "*" if sequence else "?"
            parser.add_argument(field.name, **kwargs)
            continue
        parser.add_argument(flag(field.name), **kwargs)
    return parser


def _shown(value) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) if value else "none"
    return str(value)


def _converter(scalar: type, optional: bool, name: str, choices):
    def convert(text: str):
        if optional and text.lower() in ("none", "null"):
            return None
        try:
            value = scalar(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expects {scalar.__name__}, got {text!r}") from None
        if choices is not None and value not in choices:
            raise argparse.ArgumentTypeError(
                f"must be one of {', '.join(map(str, choices))}, got {text!r}" + _suggest(str(value), map(str, choices))
            )
        return value

    convert.__name__ = scalar.__name__
    return convert


def read_config_file(path: str | Path, config_cls: type, name: str = "--config") -> dict:
    """The keys of a JSON config file: a flat ``{key: value}`` object, or a run's config.json (its "config").

    The per-invocation keys (``common.run.INVOCATION_KEYS``: out, run, resume, stop_after, threads, ...) never come
    from a file: a run's config.json leaves them out, a flat file that names one is refused.

    Args:
        path: the file; config_cls: the command's config dataclass; name: the flag that named the file (in errors).

    Raises:
        ConfigError: the file is missing or not JSON, names a per-invocation key (flat file), or names a key the
        command does not have (with a suggestion).
    """
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{name} {str(path)!r} does not exist") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{name} {str(path)!r} is not a readable JSON file ({error})") from error
    if isinstance(payload, dict) and isinstance(payload.get("config"), dict) and "kind" in payload:
        # A run's config.json: what the run computes comes along; how it was invoked (its folder, --resume,
        # --stop-after, threads, ...) belongs to that invocation and is left behind.
        payload = {key: value for key, value in payload["config"].items() if key not in INVOCATION_KEYS}
    if not isinstance(payload, dict):
        raise ConfigError(f"{name} {str(path)!r} must hold a JSON object of config keys")
    for key in payload:
        if key in INVOCATION_KEYS:
            raise ConfigError(
                f"{name} {str(path)!r}: {key!r} says how to invoke a command, not what it computes; "
                + (f"pass {flag(key)} on the command line" if name == "--config" else "leave it out")
            )
    known = {field.name for field in dataclasses.fields(config_cls)}
    for key in payload:
        if key not in known:
            raise ConfigError(f"{name} {str(path)!r}: unknown key {key!r}{_suggest(key, known)}")
    return payload


def config_from_dict(config_cls: type, values: dict):
    """``config_cls(**values)`` with JSON lists turned into tuples for sequence fields."""
    hints = typing.get_type_hints(config_cls)
    converted = {}
    for field in dataclasses.fields(config_cls):
        if field.name not in values:
            continue
        value = values[field.name]
        _, sequence, _ = _field_kind(hints[field.name])
        if sequence and isinstance(value, list):
            value = None if value == [None] else tuple(value)
        converted[field.name] = value
    return config_cls(**converted)


def parse_config(
    config_cls: type,
    argv=None,
    prog: str = "",
    description: str = "",
    presets: dict | None = None,
    config_file: bool = True,
):
    """Build a config from the command line: defaults < ``--preset`` < ``--config`` file < flags.

    Args:
        config_cls: the command's dataclass.
        argv: arguments without the program name (None: ``sys.argv[1:]``).
        prog, description, presets, config_file: as for :func:`build_parser`.

    Returns:
        a ``config_cls`` instance.

    Raises:
        ConfigError: an unknown or misspelt flag, a bad value, a bad config file; the message names the flag.
    """
    parser = build_parser(config_cls, prog, description, presets, config_file)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        options = [spelling for action in parser._actions for spelling in action.option_strings]
        word = next((item for item in unknown if item.startswith("-")), unknown[0])
        name = word.split("=", 1)[0]
        if name.startswith("-"):
            raise ConfigError(f"{prog}: unknown option {name}{_suggest(name, options)}")
        raise ConfigError(f"{prog}: unexpected argument {word!r}")
    values = dict(vars(args))
    preset = values.pop("preset", None) if presets else None  # a command may have a field named preset instead
    file = values.pop("config", None) if config_file else None
    merged = dict(presets[preset]) if presets and preset else {}
    if file:
        merged.update(read_config_file(file, config_cls))
    merged.update(values)
    for field in dataclasses.fields(config_cls):
        if field.name not in merged and _default(field) is dataclasses.MISSING:
            name = field.name.upper() if field.metadata.get("positional") else flag(field.name)
            raise ConfigError(f"{prog}: {name} is required")
    return config_from_dict(config_cls, merged)


def answer_early(
    config, prog: str = "", description: str = "", presets: dict | None = None, config_file: bool = True, argv=None
) -> None:
    """Answer ``--help`` and a mistake in the arguments before the command imports torch; else return.

    A command module calls this first thing when it runs as ``__main__``, before its heavy imports, with the
    arguments its ``main()`` gives :func:`parse_config` (or the parser its ``main()`` builds)::

        if __name__ == "__main__":
            from common.config import answer_early
            from vae.config import TrainConfig
            answer_early(TrainConfig, prog="python -m vae.train", description=__doc__.split("\n\n")[0])

    ``-h``/``--help`` prints the same help as ``main()`` and exits 0; a mistake (unknown flag, bad value, missing
    required option, unreadable ``--config``) prints the one ``error:`` line ``common.cli.run_cli`` would and exits
    2. Arguments that parse return here, and ``main()`` parses them again once the module has loaded.

    Args:
        config: the command's dataclass, or an ``argparse.ArgumentParser`` (a command that builds its own parser).
        prog, description, presets, config_file: as for :func:`parse_config` (unused with a parser).
        argv: arguments without the program name (None: ``sys.argv[1:]``).
    """
    try:
        if isinstance(config, argparse.ArgumentParser):
            config.parse_args(argv)
        else:
            parse_config(config, argv, prog, description, presets, config_file)
    except USER_ERRORS as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        sys.exit(2)


def check_positive(config, *names: str, allow_none: bool = False) -> None:
    """Raise :class:`ConfigError` naming the flag of the first of ``names`` that is not a positive number."""
    for name in names:
        value = getattr(config, name)
        if value is None and allow_none:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"{flag(name)} must be positive, got {value!r}")


def check_choice(config, name: str, choices) -> None:
    """Raise :class:`ConfigError` naming the flag when ``config.name`` is not one of ``choices``."""
    value = getattr(config, name)
    if value not in choices:
        raise ConfigError(
            f"{flag(name)} must be one of {', '.join(map(str, choices))}, got {value!r}"
            + _suggest(str(value), map(str, choices))
        )
