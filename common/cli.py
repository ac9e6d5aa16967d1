"""Command-line plumbing shared by every entry point: a user's mistake becomes one ``error:`` line.

Every script ends with ``sys.exit(run_cli(main))``. ``main(argv)`` raises on a mistake (a bad flag, a missing
or foreign file, a data file of the wrong shape); :func:`run_cli` prints ``error: <message>`` on one line to
stderr and returns exit status 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# No torch (nor numpy) at import time: every command's --help and argument errors go through this module and
# common.config before the command imports torch (common.config.answer_early).

__all__ = [
    "USER_ERRORS",
    "ArgumentParser",
    "DataUnavailableError",
    "Terminated",
    "UserError",
    "run_cli",
    "select_device",
    "set_threads",
]


class UserError(ValueError):
    """A mistake in what the user asked for; its message says what to do instead."""


class DataUnavailableError(RuntimeError):
    """The dataset could not be obtained: download failed (offline) or the local file is missing/corrupt.

    Defined here (and importable as ``common.data.DataUnavailableError``) so that :data:`USER_ERRORS` needs no
    import of the data loaders.
    """


class Terminated(Exception):
    """SIGTERM arrived: :func:`run_cli` exits with status 143 after the current write is done."""


def _raise_terminated(signum, frame):
    raise Terminated("terminated (SIGTERM)")


USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    DataUnavailableError,
)
"""Exceptions that mean "the input was wrong", not "the code is wrong" (ValueError includes UserError)."""


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise :class:`UserError` instead of printing usage and exiting."""

    def error(self, message):
        raise UserError(f"{self.prog}: {message}")


def run_cli(main, argv=None) -> int:
    """Call ``main(argv)``; turn a user mistake into one ``error:`` line on stderr.

    Args:
        main: the entry point; it raises one of :data:`USER_ERRORS` on a mistake.
        argv: arguments (None: ``sys.argv[1:]``).

    Returns:
        the exit status: 0, 2 after a user mistake, 130 after Ctrl-C, 143 after SIGTERM, or an int ``main``
        returned.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)  # unwinds like Ctrl-C: files closed, locks released
    try:
        result = main(argv)
    except USER_ERRORS as error:
        print("error: " + " ".join(str(error).split()), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; a run continues from its last checkpoint with --resume", file=sys.stderr)
        return 130
    except Terminated:
        print("error: terminated (SIGTERM); a run continues from its last checkpoint with --resume", file=sys.stderr)
        return 143
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def set_threads(threads: int | None) -> None:
    """Set torch's CPU thread count: ``threads`` if given, else 1 unless the environment sets OMP_NUM_THREADS.

    Why 1 by default: on a CPU that other processes also use, torch's default (one thread per core) makes these
    small models many times slower, while one thread is never much slower than the best (BENCHMARKS.md,
    "Thread defaults"). Pass ``--threads N`` on a machine of your own; an OMP_NUM_THREADS in the environment
    is respected (torch read it at start-up).

    Args:
        threads: a positive thread count, or None for the default above.
    """
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS", "").strip():
            return
        threads = 1
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise UserError(f"--threads must be a positive integer, got {threads!r}")
    import torch

    torch.set_num_threads(threads)


def select_device(cpu: bool = False) -> torch.device:
    """The device Accelerate assigns to this process (its GPU when there is one), or the CPU with ``cpu=True``.

    Every entry point chooses its device this way; training scripts use ``Accelerator(cpu=...)``, which agrees.
    """
    from accelerate import PartialState

    return PartialState(cpu=cpu).device
