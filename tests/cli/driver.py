"""Run command lines in this one process, as ``python -m MODULE`` / ``python SCRIPT`` would, and report each outcome.

    python tests/cli/driver.py CASES.json RESULTS.json

CASES.json holds ``[{"target": "vae.train" or "gan/train.py", "argv": [...], "watch": FOLDER}, ...]``, optionally
with ``"modules": [NAME, ...]``. For each case the driver records the exit status, what reached stdout and stderr,
the files that appeared under FOLDER, and which of the named modules the process has imported so far. One
process for all cases keeps the test fast (torch is imported once); every case still goes through the module's
own ``if __name__ == "__main__"`` wiring.
"""

import contextlib
import io
import json
import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def _files(folder):
    return sorted(str(path.relative_to(folder)) for path in Path(folder).rglob("*") if path.is_file())


def run_case(case):
    before = _files(case["watch"])
    stderr, stdout = io.StringIO(), io.StringIO()
    sys.argv = [case["target"], *case["argv"]]
    status = 0
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        try:
            if case["target"].endswith(".py"):
                runpy.run_path(str(ROOT / case["target"]), run_name="__main__")
            else:
                sys.modules.pop(case["target"], None)  # imported by an earlier case: run it afresh as __main__
                runpy.run_module(case["target"], run_name="__main__", alter_sys=True)
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException as error:  # noqa: BLE001 -- a traceback is exactly what the test looks for
            import traceback

            traceback.print_exc(file=stderr)
            status = f"uncaught {type(error).__name__}"
    after = _files(case["watch"])
    return {
        "status": status,
        "stdout": stdout.getvalue(),
        "stderr": stderr.getvalue(),
        "new_files": sorted(set(after) - set(before)),
        "imported": [name for name in case.get("modules", ()) if name in sys.modules],
    }


def main():
    cases_path, results_path = Path(sys.argv[1]), Path(sys.argv[2])  # run_case replaces sys.argv
    cases = json.loads(cases_path.read_text())
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    results = [run_case(case) for case in cases]
    results_path.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
