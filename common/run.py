"""One run folder for every trainer: start, refuse or resume; one checkpoint file; one metrics log.

A run folder holds ``config.json`` (``{"kind": ..., "config": {...}}``), ``last.pt`` (everything a resume needs,
in one atomically written file), ``metrics.jsonl`` (one JSON object per line) and whatever else the trainer
writes (best weights, figures). A trainer's loop stays in its own script; it uses this module like this::

    with RunFolder.open(config.out, config, kind="vae", resume=config.resume, accelerator=accelerator,
                        may_change=("epochs",)) as run:
        ...build data and model...
        if run.checkpoint:                       # resuming: the dict saved by run.save
            model.load_state_dict(run.checkpoint["model"])
        run.begin()                              # now the run really starts: config.json written once
        for epoch in range(run.step + 1, config.epochs + 1):
            ...
            run.save(epoch, model=model, optimizer=optimizer, state=..., metrics={...})

What it guarantees:

* one process per folder (a lock file); a second gets an ``error:`` line;
* a start that fails before :meth:`RunFolder.begin` leaves the folder exactly as it was found;
* a resume checks the config (naming every differing key), the process count and the checkpoint's kind;
  the run's identity is its config, never its path, so a copied folder resumes;
* ``metrics.jsonl`` is cut back to the checkpointed step on resume (a torn last line is dropped), and each
  step's record is written before its checkpoint, so none is lost or duplicated;
* every write goes through a temp file and a rename, with Ctrl-C and SIGTERM held back until the rename is done;
  temp files left by a killed process are removed when the next run begins; files are not private (mode 0600);
* an unreadable, damaged or foreign file, a full disk or a read-only folder becomes one :class:`RunError`, which
  ``common.cli.run_cli`` prints as one ``error:`` line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Self

import torch

from common.cli import Terminated, UserError
from common.config import INVOCATION_KEYS, SCHEDULES

__all__ = [
    "CHECKPOINT_FORMAT",
    "CONFIG_FILE",
    "INVOCATION_KEYS",
    "LAST_CHECKPOINT",
    "LOCK_FILE",
    "METRICS_FILE",
    "SCHEDULES",
    "CheckpointError",
    "MetricsLog",
    "RunError",
    "RunFolder",
    "all_finite",
    "atomic_save",
    "atomic_write_text",
    "close_process_group",
    "config_differences",
    "epoch_order",
    "interrupts_deferred",
    "learning_rate_factor",
    "load_checkpoint",
    "load_state",
    "read_config",
    "read_json",
    "read_metrics",
    "read_run",
    "report_non_finite",
    "rng_state",
    "set_learning_rate",
    "set_rng_state",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
LAST_CHECKPOINT = "last.pt"
LOCK_FILE = ".lock"
CHECKPOINT_FORMAT = 2
"""Version of ``last.pt``; files without a ``format`` key come from the first version and load as well."""
TEMP_SUFFIX = ".tmp"


class RunError(UserError):
    """A run folder or one of its files cannot be used as asked; the message names the file and what to do."""


class CheckpointError(RunError):
    """A checkpoint file is missing, damaged, or not the kind of file the caller expects."""


# -- writing files -------------------------------------------------------------------------------------------------

_deferred: list[int] = []


@contextlib.contextmanager
def interrupts_deferred():
    """Hold back Ctrl-C and SIGTERM until the block ends, then raise them (KeyboardInterrupt / Terminated).

    A write inside the block is never cut in half by the user. Outside the main thread it does nothing (signal
    handlers can only be set there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum, frame):
        received.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if signal.SIGINT in received:
            raise KeyboardInterrupt
        if signal.SIGTERM in received:
            raise Terminated("terminated (SIGTERM)")


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: Path, write) -> None:
    """Write through a temp file in ``path``'s folder, fsync, chmod to the usual mode, then rename onto ``path``."""
    path = Path(path)
    with interrupts_deferred():
        temp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
            with os.fdopen(handle, "wb") as stream:
                write(stream)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(temp, _file_mode())  # mkstemp makes 0600: a checkpoint is shared like any other file
            os.replace(temp, path)
            temp = None
        except OSError as error:
            raise RunError(f"cannot write {path}: {error.strerror or error}") from error
        finally:
            if temp is not None and os.path.exists(temp):
                os.remove(temp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and a rename: never a half-written file."""
    _atomic_write(Path(path), lambda stream: stream.write(text.encode()))


def atomic_save(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` through a temp file and a rename: never a half-written file."""
    _atomic_write(Path(path), lambda stream: torch.save(obj, stream))


def _remove_stale_temps(folder: Path) -> list[Path]:
    """Remove temp files that a killed writer left in ``folder`` (only call while holding the folder's lock)."""
    removed = []
    for path in folder.glob(f".*{TEMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


# -- reading files -------------------------------------------------------------------------------------------------


def load_checkpoint(path: str | os.PathLike, required_keys: tuple[str, ...] = (), what: str = "checkpoint") -> dict:
    """``torch.load(path, weights_only=True)`` onto the CPU, with one :class:`CheckpointError` for every failure.

    Args:
        path: the file.
        required_keys: keys the loaded dict must have.
        what: what the file should be, for messages (e.g. "vae.classifier checkpoint").

    Returns:
        the loaded dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{str(path)!r} is empty (corrupted by an interrupted copy?), not a {what}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}") from error
    except Exception as error:  # truncated zip, pickle, foreign objects: all mean "bad file"
        first = (str(error).splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{str(path)!r} is corrupted or not a {what} ({type(error).__name__}: {first})"
        ) from error
    if not isinstance(payload, dict):
        raise CheckpointError(f"{str(path)!r} is not a {what}: it holds a {type(payload).__name__}, not a dict")
    missing = [key for key in required_keys if key not in payload]
    if missing:
        raise CheckpointError(f"{str(path)!r} is not a {what}: it lacks {missing}")
    return payload


def load_state(module: torch.nn.Module | torch.optim.Optimizer, state: dict, source: str | os.PathLike) -> None:
    """``module.load_state_dict(state)``, turning an architecture mismatch into a :class:`CheckpointError`.

    Args:
        module: the freshly built model (or optimizer: anything with ``load_state_dict``).
        state: the saved state.
        source: the file it came from, for the message.
    """
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        first = (str(error).splitlines() or [""])[0][:300]
        raise CheckpointError(
            f"{source}: the saved weights do not fit the model its config describes ({first})"
        ) from error


def read_json(path: Path):
    """The JSON value in ``path``; an unreadable or damaged file is a :class:`RunError` naming it."""
    try:
        return json.loads(path.read_text())
    except OSError as error:
        raise RunError(f"cannot read {path}: {error.strerror or error}") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunError(f"{path} is damaged: not valid JSON ({error})") from error


def write_config(folder: str | os.PathLike, config, kind: str, command: str | None = None) -> Path:
    """Write ``folder/config.json`` as ``{"kind": kind, "config": {...}}`` (and the ``command``), atomically.

    A trainer never calls this (``RunFolder.begin`` does); an experiment driver records its settings with it.
    """
    record = {"kind": kind, "config": _as_dict(config)}
    if command is not None:
        record["command"] = command
    path = Path(folder) / CONFIG_FILE
    atomic_write_text(path, json.dumps(_jsonable(record), indent=2, sort_keys=True) + "\n")
    return path


def read_config(run_dir: str | os.PathLike) -> tuple[str, dict]:
    """Read ``run_dir/config.json``.

    Returns:
        ``(kind, config_dict)``.

    Raises:
        FileNotFoundError: the folder does not exist or has no config.json. RunError: config.json is damaged.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {str(run_dir)!r} does not exist")
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run folder: it has no {CONFIG_FILE}")
    payload = read_json(path)
    if not isinstance(payload, dict) or "kind" not in payload or not isinstance(payload.get("config"), dict):
        raise RunError(f"{path} is damaged: it must hold {{'kind': ..., 'config': {{...}}}}")
    return payload["kind"], payload["config"]


def read_run(run_dir: str | os.PathLike, kinds: tuple[str, ...]) -> tuple[str, dict]:
    """:func:`read_config` for a run folder that must be of one of ``kinds`` (else a RunError naming both)."""
    kind, config = read_config(run_dir)
    if kind not in kinds:
        raise RunError(f"{str(run_dir)!r} holds a {kind!r} run; expected {' or '.join(map(repr, kinds))}")
    return kind, config


def _as_dict(config) -> dict:
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return dict(config)
    raise TypeError(f"config must be a dataclass instance or a dict, got {type(config).__name__}")


def _normalized(config) -> dict:
    """Round-trip through JSON so tuples compare equal to the lists read back from config.json."""
    return json.loads(json.dumps(_as_dict(config)))


def config_differences(saved, current, ignore=()) -> list[str]:
    """``["key: old -> new", ...]`` for every key that differs, except :data:`INVOCATION_KEYS` and ``ignore``."""
    saved, current = _normalized(saved), _normalized(current)
    skip = set(INVOCATION_KEYS) | set(ignore)
    return [
        f"{key}: {saved.get(key, '<missing>')!r} -> {current.get(key, '<missing>')!r}"
        for key in sorted(set(saved) | set(current))
        if key not in skip and saved.get(key, "<missing>") != current.get(key, "<missing>")
    ]


# -- metrics -------------------------------------------------------------------------------------------------------


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        return _jsonable(value.item() if value.numel() == 1 else value.tolist())
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
    """A JSON-lines metrics file: each :meth:`write` appends one complete line."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def write(self, record: dict) -> None:
        """Append ``record`` (a flat dict; tensors and numpy scalars become numbers) as one JSON line."""
        if not isinstance(record, dict):
            raise TypeError(f"record must be a dict, got {type(record).__name__}")
        line = json.dumps(_jsonable(record), sort_keys=True) + "\n"
        with interrupts_deferred():
            try:
                with open(self.path, "a") as stream:
                    stream.write(line)
                    stream.flush()
            except OSError as error:
                raise RunError(f"cannot write {self.path}: {error.strerror or error}") from error

    def truncate(self, step_key: str, step: int) -> int:
        """Keep only the complete records with ``record[step_key] <= step`` (records without the key stay).

        Returns:
            the number of lines dropped (torn or later than ``step``).
        """
        if not self.path.is_file():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines(keepends=True):
            try:
                record = json.loads(line) if line.endswith("\n") else None
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or (step_key in record and not record[step_key] <= step):
                dropped += line.strip() != ""
                continue
            kept.append(line)
        if dropped or any(not line.endswith("\n") for line in kept):
            atomic_write_text(self.path, "".join(kept))
        return dropped


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Every complete record of a JSON-lines metrics file (missing file: empty list; a torn last line is skipped).

    Raises:
        RunError: a line other than the last is not JSON (naming the file and line).
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines):  # a write cut short by a kill: the run resumes before it
                continue
            raise RunError(f"{path} is damaged at line {number}: {error}") from error
    return records


# -- numerics of a loop ----------------------------------------------------------------------------------------------


def all_finite(loss: torch.Tensor, accelerator=None) -> bool:
    """Whether the loss is finite on every process (one collective), so that all processes stop together.

    Args:
        loss: this process's loss (any shape).
        accelerator: an ``accelerate.Accelerator`` (None: a single process).
    """
    finite = torch.isfinite(loss.detach()).all().float().reshape(1)
    if accelerator is None or accelerator.num_processes == 1:
        return bool(finite.item() == 1)
    # accelerate's reduce knows only sum and mean: every process is finite when the sum is the process count.
    return bool(accelerator.reduce(finite, reduction="sum").item() == accelerator.num_processes)


def report_non_finite(result: dict, where: str, hint: str = "lower --learning-rate, then --resume") -> bool:
    """Whether a non-finite loss stopped the run whose ``result`` a trainer returned; if so, print the command's one
    ``error:`` line (the run's last good checkpoint is kept) and let the command exit with status 1.

    Args:
        result: the trainer's result, with ``stopped``.
        where: the run's place, e.g. ``"in runs/x"`` or ``"at epoch 2, step 0 of runs/x"``.
        hint: what to change before resuming.
    """
    if result.get("stopped") != "non-finite loss":
        return False
    print(f"error: non-finite loss {where}; its last good checkpoint is kept ({hint})", file=sys.stderr)
    return True


def close_process_group() -> None:
    """Wait for every process, then end the process group of a multi-process launch (no-op otherwise).

    A process that exits with its gloo group still open can abort ("terminate called without an active
    exception") while its peer is still using the group; the command-line entry points call this last.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def rng_state() -> dict:
    """The torch RNG states (CPU and CUDA) as tensors, for a checkpoint loadable with ``weights_only=True``."""
    state: dict[str, torch.Tensor | list[torch.Tensor]] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_order(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffling of one epoch, ``(num_examples,)``; it depends only on (seed, epoch), so a resume sees the same
    batches."""
    return torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def learning_rate_factor(
    schedule: str, step: int, total_steps: int, epoch: int = 0, milestones=(), gamma: float = 0.1
) -> float:
    """The multiplier of the base learning rate at 0-based optimizer ``step`` (computed, never stepped, so it is the
    same on any number of processes and after a resume).

    Args:
        schedule: "constant"; "cosine" (half a cosine from 1 to 0 over ``total_steps``); "linear" (1 to 0 over
            ``total_steps``); "step" (``gamma`` per milestone epoch passed: ``epoch > milestone``).
        step: optimizer steps done so far.
        total_steps: steps of the whole run (cosine, linear).
        epoch: the current 1-based epoch (step).
        milestones: epochs after which the step schedule multiplies by ``gamma``.
        gamma: the step schedule's factor.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if schedule == "linear":
        return max(0.0, 1.0 - step / total_steps)
    if schedule == "step":
        return gamma ** sum(epoch > milestone for milestone in milestones)
    raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")


def set_learning_rate(optimizer: torch.optim.Optimizer, rate: float) -> None:
    """Set every parameter group's learning rate to ``rate``."""
    for group in optimizer.param_groups:
        group["lr"] = rate


# -- the run folder ------------------------------------------------------------------------------------------------


def _acquire_lock(path: Path):
    """An open file holding an exclusive ``flock`` on ``path`` (created if absent), or None when another has it."""
    import fcntl

    while True:
        handle = open(path, "a+")  # noqa: SIM115 -- held open for the run: the open file is the lock
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        # The previous holder may have removed the file between our open and our flock: lock the file on disk.
        try:
            same = os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return handle
        handle.close()


class RunFolder:
    """A run folder held by this process for one training run (see the module docstring).

    Build it with :meth:`open` and use it as a context manager. Attributes after opening:

    * ``checkpoint``: the dict :meth:`save` wrote (None for a new run), loaded on every process;
    * ``step``: the checkpointed step (0 for a new run);
    * ``path``: the folder; ``metrics``: the :class:`MetricsLog` (main process only, else None).
    """

    def __init__(self, path: Path, config, kind: str, accelerator=None):
        self.path = Path(path)
        self.config = config
        self.kind = kind
        self.accelerator = accelerator
        self.checkpoint: dict | None = None
        self.step = 0
        self.metrics: MetricsLog | None = None
        self.step_key = "step"
        self._lock = None
        self._created_folder = False
        self._created_lock = False
        self._begun = False

    # -- opening -------------------------------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    @property
    def num_processes(self) -> int:
        return 1 if self.accelerator is None else self.accelerator.num_processes

    @classmethod
    def open(
        cls,
        path,
        config,
        kind: str,
        resume: bool = False,
        accelerator=None,
        may_change=(),
        step_key: str = "step",
        upgrade=None,
    ) -> RunFolder:
        """Lock the folder and decide: a new run, a resume, or a refusal (a :class:`RunError`).

        A folder with a checkpoint resumes with ``resume=True`` and is refused without it. A folder with a
        config.json but no checkpoint (stopped before its first save) starts over if the config agrees. Any other
        non-empty folder is refused. Nothing is written until :meth:`begin`.

        Args:
            path: the run folder (``--out``).
            config: this invocation's config (dataclass instance).
            kind: what trains here, e.g. "vae"; a checkpoint of another kind is refused.
            resume: whether the user asked to continue (``--resume``).
            accelerator: the ``Accelerator`` (None: one process). Only the main process locks and writes; the
                decision is shared with the others, so every process raises the same error.
            may_change: config keys besides :data:`INVOCATION_KEYS` that may differ on resume (e.g. "epochs").
            step_key: the metrics key that counts checkpoints ("epoch", "iteration", ...).
            upgrade: ``f(checkpoint) -> checkpoint`` converting an older checkpoint layout (optional).
        """
        run = cls(path, config, kind, accelerator)
        run.step_key = step_key
        error: RunError | None = None
        if run.is_main:
            try:
                run._open_main(resume, may_change, upgrade)
            except BaseException as raised:
                run._undo()
                if not isinstance(raised, RunError):
                    raise
                error = raised
        if run.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            shared = broadcast_object_list([error])
            error = shared[0]
        if error is not None:
            raise error
        if not run.is_main and (run.path / LAST_CHECKPOINT).is_file() and resume:
            run.checkpoint = run._load_checkpoint(upgrade)
            run.step = int(run.checkpoint["step"])
        return run

    def _open_main(self, resume: bool, may_change, upgrade) -> None:
        path = self.path
        if path.exists() and not path.is_dir():
            raise RunError(f"--out {str(path)!r} is a file, not a folder")
        if not path.exists():
            try:
                path.mkdir(parents=True)
            except OSError as error:
                raise RunError(f"cannot create run folder {path}: {error.strerror or error}") from error
            self._created_folder = True
        lock_path = path / LOCK_FILE
        self._created_lock = not lock_path.exists()
        try:
            self._lock = _acquire_lock(lock_path)
        except OSError as error:
            raise RunError(f"cannot write in run folder {path}: {error.strerror or error}") from error
        if self._lock is None:
            self._created_lock = False
            raise RunError(
                f"run folder {str(path)!r} is in use by another process; wait for it or choose another --out"
            )
        checkpoint_path = path / LAST_CHECKPOINT
        config_path = path / CONFIG_FILE
        if checkpoint_path.exists():
            if not resume:
                raise RunError(f"{checkpoint_path} exists: pass --resume to continue it, or choose another --out")
            self.checkpoint = self._load_checkpoint(upgrade)
            differences = config_differences(self.checkpoint["config"], self.config, may_change)
            if differences:
                raise RunError(
                    f"the config differs from the run in {path}: use the same settings or another --out. "
                    "Differing keys: " + "; ".join(differences)
                )
            saved_processes = self.checkpoint.get("num_processes")
            if saved_processes is not None and int(saved_processes) != self.num_processes:
                raise RunError(
                    f"{checkpoint_path} was written by {saved_processes} process(es); resume it with the "
                    f"same number (this launch has {self.num_processes})"
                )
            self.step = int(self.checkpoint["step"])
            return
        if config_path.exists():
            kind, saved = read_config(path)
            if read_metrics(path / METRICS_FILE):  # it saved steps once: its checkpoint was lost, not never made
                raise RunError(
                    f"{path} is damaged: its {METRICS_FILE} has records but its {LAST_CHECKPOINT} is "
                    "missing; restore the file or choose another --out"
                )
            # Stopped before its first checkpoint: the same config starts over.
            if kind != self.kind:
                raise RunError(f"{str(path)!r} holds a {kind!r} run, not a {self.kind!r} one; choose another --out")
            differences = config_differences(saved, self.config, may_change)
            if differences:
                raise RunError(
                    f"{path} holds an unfinished run with another config; use the same settings or another "
                    "--out. Differing keys: " + "; ".join(differences)
                )
            return
        if resume:
            raise RunError(f"--resume: {path} has no {LAST_CHECKPOINT} to continue")
        others = [
            entry.name
            for entry in path.iterdir()
            if entry.name != LOCK_FILE and not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX))
        ]
        if others:
            raise RunError(
                f"--out {str(path)!r} is not empty and holds no run ({', '.join(sorted(others)[:5])}); "
                "choose another --out"
            )

    def _load_checkpoint(self, upgrade) -> dict:
        path = self.path / LAST_CHECKPOINT
        checkpoint = load_checkpoint(path, ("config",), what=f"{self.kind} checkpoint")
        if upgrade is not None:
            checkpoint = upgrade(checkpoint)
        if "format" not in checkpoint:  # the first layout: "epoch" counted the checkpoints
            checkpoint = {**checkpoint, "format": 1, "step": checkpoint.get("epoch", checkpoint.get("step"))}
        if checkpoint.get("kind", self.kind) != self.kind:
            raise CheckpointError(f"{path} is a {checkpoint['kind']!r} checkpoint, not a {self.kind!r} one")
        if checkpoint.get("step") is None:
            raise CheckpointError(f"{path} is damaged: it does not say which step it holds")
        return checkpoint

    def _undo(self) -> None:
        """Put the folder back as it was found (a start that failed before :meth:`begin`)."""
        self._release()
        with contextlib.suppress(OSError):
            if self._created_lock:
                (self.path / LOCK_FILE).unlink()
            if self._created_folder:
                self.path.rmdir()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if not self.is_main:
            return
        if self._begun:
            self._release()
            if self._created_lock:
                with contextlib.suppress(OSError):
                    (self.path / LOCK_FILE).unlink()
        else:
            self._undo()

    # -- running -------------------------------------------------------------------------------------------------

    def begin(self, command: str | None = None) -> None:
        """The run really starts: remove stale temp files; a new run writes config.json and an empty metrics log,
        a resumed one cuts metrics.jsonl back to the checkpointed step.

        Args:
            command: the command line, stored in config.json for reports (optional).
        """
        self._begun = True
        if not self.is_main:
            return
        _remove_stale_temps(self.path)
        self.metrics = MetricsLog(self.path / METRICS_FILE)
        if self.checkpoint is None:
            write_config(self.path, self.config, self.kind, command)
            atomic_write_text(self.path / METRICS_FILE, "")
        else:
            self.metrics.truncate(self.step_key, self.step)

    def config_dict(self) -> dict:
        """This run's config as a JSON-ready dict (what config.json and every checkpoint store)."""
        return _normalized(self.config)

    def log(self, record: dict) -> None:
        """Append a metrics record (main process only; others ignore it)."""
        if self.metrics is not None:
            self.metrics.write(record)

    def save(
        self,
        step: int,
        *,
        model=None,
        optimizer=None,
        state: dict | None = None,
        metrics: dict | None = None,
        extra: dict | None = None,
    ) -> None:
        """Checkpoint after ``step``: the metrics record first, then ``last.pt`` with everything a resume needs.

        Call it on every process (the RNG states of all processes are gathered); only the main process writes.

        Args:
            step: the completed step (epoch, iteration); the resume continues after it.
            model: the (unwrapped) model; its ``state_dict()`` is saved as "model".
            optimizer: its ``state_dict()`` is saved as "optimizer".
            state: the loop's own small state (best score, patience counter, ...), saved as "state".
            metrics: this step's record for metrics.jsonl (``step_key`` is added).
            extra: more entries for the checkpoint (e.g. an EMA's weights), each loadable with weights_only.
        """
        rng = rng_state()
        if self.num_processes > 1:
            from accelerate.utils import gather_object

            rng = gather_object([rng])
        if not self.is_main:
            return
        if metrics is not None:
            self.log({self.step_key: step, **metrics})
        checkpoint = {
            "format": CHECKPOINT_FORMAT,
            "kind": self.kind,
            "step": int(step),
            "config": _as_dict(self.config),
            "num_processes": self.num_processes,
            "rng": rng,
            "state": dict(state or {}),
        }
        if model is not None:
            checkpoint["model"] = model.state_dict()
        if optimizer is not None:
            checkpoint["optimizer"] = optimizer.state_dict()
        checkpoint.update(extra or {})
        atomic_save(checkpoint, self.path / LAST_CHECKPOINT)
        self.step = int(step)

    def restore_rng(self) -> None:
        """Set this process's RNG states to the checkpoint's (call after building everything that draws)."""
        if self.checkpoint is None or "rng" not in self.checkpoint:
            return
        rng = self.checkpoint["rng"]
        if isinstance(rng, list):
            index = 0 if self.accelerator is None else self.accelerator.process_index
            rng = rng[index]
        set_rng_state(rng)
