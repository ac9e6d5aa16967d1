"""Run folders shared by the training scripts: config dataclass <-> argparse, config.json, atomic
checkpoints and JSON-lines metrics.

A run folder holds ``config.json`` (``{"kind": ..., "config": {...}}``), checkpoints written with
:func:`atomic_save`, ``metrics.jsonl`` written with :class:`MetricsLog`, and figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import re
import tempfile
import types
import typing
from pathlib import Path

import torch

__all__ = [
    "add_dataclass_arguments",
    "config_from_args",
    "write_config",
    "read_config",
    "check_same_config",
    "atomic_save",
    "atomic_write_text",
    "MetricsLog",
    "read_metrics",
    "read_run",
    "load_checkpoint",
    "CheckpointError",
    "CONFIG_FILE",
    "METRICS_FILE",
    "epoch_order",
    "rng_state",
    "set_rng_state",
    "apply_preset",
    "open_last_checkpoint",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupted, or not the kind of file the caller expects."""


def _field_kind(annotation) -> tuple[type, bool, bool]:
    """Return ``(scalar_type, is_sequence, is_optional)`` for a dataclass field annotation."""
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


_FIELD_LINE = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.+?)\s*$")


def _field_comments(config_cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field line in the dataclass source: the option's --help text."""
    try:
        source = inspect.getsource(config_cls)
    except (OSError, TypeError):  # e.g. a class defined in an interactive session
        return {}
    comments = {}
    for line in source.splitlines():
        match = _FIELD_LINE.match(line)
        if match:
            comments[match.group(1)] = match.group(2)
    return comments


def add_dataclass_arguments(parser: argparse.ArgumentParser, config_cls: type) -> argparse.ArgumentParser:
    """Add one ``--field-name`` option per field of ``config_cls``, typed and defaulted from the dataclass.

    bool fields become ``--flag/--no-flag``; ``list``/``tuple`` fields take one or more values; ``Optional[X]``
    fields take an X and default to None. Each option's help is the field's trailing ``# comment`` in the
    dataclass source (or ``metadata["help"]``) followed by its default.

    Args:
        parser: the parser to extend.
        config_cls: a dataclass type.

    Returns:
        the same parser.
    """
    if not dataclasses.is_dataclass(config_cls):
        raise TypeError(f"config_cls must be a dataclass, got {config_cls!r}")
    hints = typing.get_type_hints(config_cls)
    comments = _field_comments(config_cls)
    for field in dataclasses.fields(config_cls):
        scalar, sequence, _ = _field_kind(hints[field.name])
        default = field.default
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        option = "--" + field.name.replace("_", "-")
        required = default is dataclasses.MISSING
        description = field.metadata.get("help") or comments.get(field.name, "")
        suffix = f"(default: {default})" if not required else "(required)"
        kwargs = {"dest": field.name, "help": f"{description} {suffix}".strip()}
        if scalar is bool and not sequence:
            parser.add_argument(option, action=argparse.BooleanOptionalAction, default=default, **kwargs)
            continue
        kwargs["type"] = scalar
        if sequence:
            kwargs["nargs"] = "+"
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        parser.add_argument(option, **kwargs)
    return parser


def config_from_args(config_cls: type, args: argparse.Namespace):
    """Build a ``config_cls`` instance from parsed arguments (tuple fields get tuples back)."""
    hints = typing.get_type_hints(config_cls)
    values = {}
    for field in dataclasses.fields(config_cls):
        value = getattr(args, field.name)
        if typing.get_origin(_strip_optional(hints[field.name])) is tuple and value is not None:
            value = tuple(value)
        values[field.name] = value
    return config_cls(**values)


def _strip_optional(annotation):
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return non_none[0] if len(non_none) == 1 else annotation
    return annotation


def _as_dict(config) -> dict:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return dict(config)
    raise TypeError(f"config must be a dataclass instance or a dict, got {type(config).__name__}")


def _json_normalize(value):
    """Round-trip through JSON so tuples compare equal to the lists read back from config.json."""
    return json.loads(json.dumps(value))


def write_config(run_dir: str | os.PathLike, config, kind: str, command: str | None = None) -> Path:
    """Write ``run_dir/config.json`` as ``{"kind": kind, "config": {...}}`` (atomically; creates run_dir).

    Args:
        run_dir: the run folder.
        config: a dataclass instance or a dict of JSON-serializable values.
        kind: what produced the run, e.g. "vae", "vae-classifier", "gan".
        command: the command line that started the run, stored as ``"command"`` when given (for reports).

    Returns:
        the path written.
    """
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind must be a non-empty string, got {kind!r}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CONFIG_FILE
    record = {"kind": kind, "config": _as_dict(config)}
    if command is not None:
        record["command"] = command
    text = json.dumps(record, indent=2, sort_keys=True)
    _atomic_write(path, lambda handle: handle.write(text.encode() + b"\n"))
    return path


def read_config(run_dir: str | os.PathLike) -> tuple[str, dict]:
    """Read ``run_dir/config.json``.

    Returns:
        ``(kind, config_dict)``.

    Raises:
        FileNotFoundError: the folder does not exist or has no config.json.
        ValueError: config.json is not a run record.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run folder: it has no {CONFIG_FILE}")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from error
    if not isinstance(payload, dict) or "kind" not in payload or not isinstance(payload.get("config"), dict):
        raise ValueError(f"{path} must hold {{'kind': ..., 'config': {{...}}}}")
    return payload["kind"], payload["config"]


def read_run(run_dir: str | os.PathLike, kinds: tuple[str, ...]) -> tuple[str, dict]:
    """:func:`read_config` for a run folder that must be of one of ``kinds``.

    Raises:
        ValueError: naming the folder's kind and the expected ones.
    """
    kind, config = read_config(run_dir)
    if kind not in kinds:
        raise ValueError(f"{str(run_dir)!r} holds a {kind!r} run; expected {' or '.join(map(repr, kinds))}")
    return kind, config


def load_checkpoint(path: str | os.PathLike, required_keys: tuple[str, ...] = (), what: str = "checkpoint") -> dict:
    """``torch.load(path, weights_only=True)`` onto the CPU, with one clear error for every way it can fail.

    Args:
        path: the file.
        required_keys: keys the loaded dict must have.
        what: what the file should be, for messages (e.g. "vae.classifier checkpoint").

    Returns:
        the loaded dict.

    Raises:
        CheckpointError: the file is missing, unreadable, corrupted, not a dict, or lacks a required key.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- truncated zip, pickle, foreign objects: all mean "bad file"
        raise CheckpointError(
            f"{str(path)!r} is corrupted or not a {what} ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
        ) from error
    if not isinstance(payload, dict):
        raise CheckpointError(f"{str(path)!r} is not a {what}: it holds a {type(payload).__name__}, not a dict")
    missing = [key for key in required_keys if key not in payload]
    if missing:
        raise CheckpointError(f"{str(path)!r} is not a {what}: it lacks {missing}")
    return payload


def check_same_config(saved: dict, current, ignore=()) -> None:
    """Refuse to continue a run with a different config.

    Args:
        saved: the config dict stored with the run.
        current: the new config (dict or dataclass instance).
        ignore: keys allowed to differ (e.g. "resume", "max_epochs").

    Raises:
        ValueError: naming every differing key as ``key: old -> new``.
    """
    saved = _json_normalize(_as_dict(saved))
    current = _json_normalize(_as_dict(current))
    differences = []
    for key in sorted(set(saved) | set(current)):
        if key in ignore:
            continue
        old, new = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if old != new:
            differences.append(f"{key}: {old!r} -> {new!r}")
    if differences:
        raise ValueError(
            "the config differs from the saved run's; use a new --out folder or the same settings. Differing keys: "
            + "; ".join(differences)
        )


def _atomic_write(path: Path, write) -> None:
    """Write to a temp file in ``path``'s folder, fsync, then ``os.replace`` onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename: a crash never leaves a half-written file."""
    _atomic_write(Path(path), lambda stream: stream.write(text.encode()))


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to a temp file next to ``path``, then rename: a crash never leaves a half-written file."""
    _atomic_write(Path(path), lambda stream: torch.save(obj, stream))


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan" / "inf": strict JSON has no literal for these
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    return value


class MetricsLog:
    """Append-only JSON-lines metrics file; each :meth:`write` adds one line and flushes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        """Append ``record`` (a flat dict; tensors and numpy scalars become numbers) as one JSON line."""
        if not isinstance(record, dict):
            raise TypeError(f"record must be a dict, got {type(record).__name__}")
        line = json.dumps(_jsonable(record), sort_keys=True)
        with open(self.path, "a") as stream:
            stream.write(line + "\n")
            stream.flush()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Read every record of a JSON-lines metrics file (missing file: empty list)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def epoch_order(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffling of one epoch, ``(num_examples,)``: it depends only on (seed, epoch), so a resumed run sees the
    same batches."""
    return torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def rng_state() -> dict:
    """The torch RNG states (CPU and CUDA) as tensors, for a checkpoint loadable with ``weights_only=True``."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def apply_preset(parser: argparse.ArgumentParser, presets: dict, argv) -> None:
    """Make ``--preset NAME``'s values the parser's defaults, so explicit flags still override them."""
    known, _ = parser.parse_known_args(argv)
    if getattr(known, "preset", None):
        parser.set_defaults(**presets[known.preset])


def open_last_checkpoint(path: str | os.PathLike, resume: bool, required_keys: tuple[str, ...], what: str) -> dict | None:
    """The checkpoint a training run continues from, or None for a new run.

    Args:
        path: the run's last checkpoint (e.g. ``OUT/last.pt``).
        resume: whether the user asked to continue the run.
        required_keys, what: as for :func:`load_checkpoint`.

    Raises:
        FileNotFoundError: ``resume`` without the file. FileExistsError: the file exists but ``resume`` is off
        (a new run never overwrites an old one).
    """
    path = Path(path)
    if resume:
        if not path.is_file():
            raise FileNotFoundError(f"--resume: {path} does not exist")
        return load_checkpoint(path, required_keys, what=what)
    if path.exists():
        raise FileExistsError(f"{path} exists: pass --resume to continue it, or choose another --out")
    return None
