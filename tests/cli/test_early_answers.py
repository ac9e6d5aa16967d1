"""Every command answers ``--help`` and a mistyped flag before it imports torch (``common.config.answer_early``).

A time limit would be flaky on a shared machine, so the tests check the mechanism: after ``python -m MODULE --help``
and after ``python -m MODULE --no-such-flag`` (run through the module's own ``__main__`` wiring, all in one
subprocess, tests/cli/driver.py) none of torch, numpy, accelerate, matplotlib, scipy, torchvision or torch-fidelity
has been imported; the help is the one ``main()`` prints, and the mistake is one ``error:`` line with status 2.
The imports are counted over the whole subprocess, in the order of CASES: the first case that fails is the one that
imported the module.
"""

import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
HEAVY = ("torch", "numpy", "accelerate", "matplotlib", "scipy", "torchvision", "torch_fidelity")
COLUMNS = "100"  # the same help width in the subprocess and here


def _commands() -> list[str]:
    """Every module of the experiment layer that runs as a command (a main() handed to run_cli)."""
    found = []
    for package in ("common", "eval", "vae", "gan", "ckd"):
        for path in sorted((ROOT / package).glob("*.py")):
            text = path.read_text()
            if "\ndef main(" in text and "run_cli(" in text and 'if __name__ == "__main__"' in text:
                found.append(f"{package}.{path.stem}")
    return found


COMMANDS = _commands()
TARGETS = [*COMMANDS, "gan/train.py"]  # gan/train.py also runs by path (accelerate launch gan/train.py)
CASES = [(target, argv) for target in TARGETS for argv in (["--help"], ["--no-such-flag"])]


def test_every_command_is_found():
    assert {"vae.train", "gan.train", "ckd.train", "common.data", "gan.report", "ckd.analysis"} <= set(COMMANDS)
    assert len(COMMANDS) >= 20, COMMANDS


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    base = tmp_path_factory.mktemp("early")
    (base / "watch").mkdir()
    cases = [
        {"target": target, "argv": argv, "watch": str(base / "watch"), "modules": list(HEAVY)} for target, argv in CASES
    ]
    (base / "cases.json").write_text(json.dumps(cases))
    env = {**os.environ, "COLUMNS": COLUMNS}
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "cli" / "driver.py"),
            str(base / "cases.json"),
            str(base / "results.json"),
        ],
        check=True,
        cwd=ROOT,
        timeout=300,
        env=env,
    )
    return dict(
        zip((f"{target} {' '.join(argv)}" for target, argv in CASES), json.loads((base / "results.json").read_text()))
    )


@pytest.mark.parametrize("target", TARGETS)
def test_help_imports_no_torch(outcomes, target):
    outcome = outcomes[f"{target} --help"]
    assert outcome["status"] == 0, outcome
    assert outcome["stdout"].startswith("usage: "), outcome
    assert outcome["imported"] == [], f"{target} --help imported {outcome['imported']}"


@pytest.mark.parametrize("target", TARGETS)
def test_a_mistyped_flag_is_one_error_line_without_torch(outcomes, target):
    outcome = outcomes[f"{target} --no-such-flag"]
    lines = outcome["stderr"].strip().splitlines()
    assert outcome["status"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), outcome
    assert outcome["imported"] == [], f"{target} --no-such-flag imported {outcome['imported']}"
    assert not outcome["new_files"]


def _main_help(module_name: str) -> str:
    """What ``main(["--help"])`` of the fully imported module prints."""
    module = importlib.import_module(module_name)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code in (0, None)
    return out.getvalue()


@pytest.mark.parametrize("target", TARGETS)
def test_the_early_help_is_mains_help(outcomes, target, monkeypatch):
    monkeypatch.setenv("COLUMNS", COLUMNS)
    module_name = "gan.train" if target == "gan/train.py" else target
    assert outcomes[f"{target} --help"]["stdout"] == _main_help(module_name)


def test_the_early_parse_is_mains_parse(capsys):
    """Arguments that parse pass through answer_early untouched; a bad value or a missing required option exits 2
    with one error line, as run_cli reports it."""
    from common.cli import ArgumentParser
    from common.config import answer_early
    from vae.config import LoglikConfig, TrainConfig

    assert answer_early(TrainConfig, prog="p", argv=["--latent-dim", "3", "--no-figures"]) is None
    with pytest.raises(SystemExit) as exit_:
        answer_early(TrainConfig, prog="p", argv=["--latent-dim", "three"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: argument --latent-dim: expects int, got 'three'\n"
    with pytest.raises(SystemExit) as exit_:
        answer_early(LoglikConfig, prog="python -m vae.loglik", argv=[])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: python -m vae.loglik: --run is required\n"
    parser = ArgumentParser(prog="q")  # a command on plain argparse hands over its parser
    parser.add_argument("--n", type=int, required=True)
    assert answer_early(parser, argv=["--n", "4"]) is None
    with pytest.raises(SystemExit) as exit_:
        answer_early(parser, argv=["--n", "x"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: q: argument --n: invalid int value: 'x'\n"


def test_the_light_constants_agree_with_the_heavy_modules():
    """Constants repeated in the torch-free config modules (so --help needs no torch) equal the originals."""
    import gan.losses
    import vmfprior.heads
    from common.classifier_config import HEAD_KINDS
    from gan.config import LOSS_NAMES

    assert HEAD_KINDS == vmfprior.heads.HEAD_KINDS
    assert LOSS_NAMES == tuple(gan.losses.LOSSES)
