"""Every command line answers a user's mistake with one ``error:`` line and exit status 2, and writes no file.

The mistakes: a missing or non-run folder, a corrupted or foreign checkpoint, a data file with the wrong keys,
shapes or dtypes, and contradictory or out-of-range flags. All cases run in one subprocess (tests/cli/driver.py).
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent.parent
QUICK = str(ROOT / "data" / "mnist-quick.npz")


def _fixtures(base: Path) -> dict:
    """Files and folders the mistakes point at."""
    paths = {name: base / name for name in ("missing", "not_a_run", "vae_corrupt", "gan_run", "out")}
    paths["not_a_run"].mkdir()
    paths["out"].mkdir()
    paths["vae_corrupt"].mkdir()
    (paths["vae_corrupt"] / "config.json").write_text(
        json.dumps({"kind": "vae", "config": {"model": "hvae", "latent_dim": 3}})
    )
    (paths["vae_corrupt"] / "best.pt").write_bytes(b"\x00not a checkpoint" * 10)
    paths["gan_run"].mkdir()
    (paths["gan_run"] / "config.json").write_text(json.dumps({"kind": "gan", "config": {"sampler": "gaussian"}}))
    paths["corrupt_pt"] = base / "corrupt.pt"
    paths["corrupt_pt"].write_bytes(b"PK\x03\x04 truncated zip")
    paths["foreign_pt"] = base / "foreign.pt"
    torch.save([1, 2, 3], paths["foreign_pt"])
    paths["wrong_keys"] = base / "wrong-keys.npz"
    np.savez(paths["wrong_keys"], images=np.zeros((4, 28, 28), np.uint8), labels=np.zeros(4, np.int64))
    paths["wrong_dtype"] = base / "wrong-dtype.npz"
    np.savez(
        paths["wrong_dtype"],
        x_train=np.zeros((4, 28, 28), np.float32),
        y_train=np.zeros(4, np.int64),
        x_test=np.zeros((2, 28, 28), np.float32),
        y_test=np.zeros(2, np.int64),
    )
    paths["wrong_shape"] = base / "wrong-shape.npz"
    np.savez(
        paths["wrong_shape"],
        x_train=np.zeros((4, 32, 32, 3), np.uint8),
        y_train=np.zeros(4, np.int64),
        x_test=np.zeros((2, 32, 32, 3), np.uint8),
        y_test=np.zeros(2, np.int64),
    )
    return {name: str(path) for name, path in paths.items()}


# (target, argv with {placeholders}, a word the message must contain)
CASES = [
    ("vae.train", ["--data", "{wrong_keys}", "--out", "{out}/a"], "lacks key"),
    ("vae.train", ["--data", "{wrong_dtype}", "--out", "{out}/a"], "uint8"),
    ("vae.train", ["--data", "{missing}.npz", "--out", "{out}/a"], "does not exist"),
    (
        "vae.train",
        [
            "--model",
            "hvae-l",
            "--latent-dim",
            "3",
            "--classifier",
            "{corrupt_pt}",
            "--data",
            QUICK,
            "--num-validation",
            "1000",
            "--out",
            "{out}/a",
        ],
        "corrupted",
    ),
    (
        "vae.train",
        [
            "--model",
            "hvae-l",
            "--classifier",
            "{foreign_pt}",
            "--data",
            QUICK,
            "--num-validation",
            "1000",
            "--out",
            "{out}/a",
        ],
        "state dict",
    ),
    ("vae.train", ["--model", "hvae-l", "--data", QUICK, "--out", "{out}/a"], "--classifier"),
    ("vae.train", ["--latent-dim", "1"], "--latent-dim"),
    ("vae.train", ["--model", "gaussian"], "--model"),
    ("vae.train", ["--batch-size", "many"], "--batch-size: expects int"),
    ("vae.train", ["--resume", "--out", "{not_a_run}"], "no last.pt"),
    ("vae.classifier", ["--epochs", "0", "--out", "{out}/c"], "--epochs"),
    ("vae.classifier", ["--data", "{wrong_shape}", "--out", "{out}/c"], "shape"),
    (
        "vae.experiment",
        ["--latent-dims", "3", "--ablation-latent-dims", "7", "--out", "{out}/e"],
        "--ablation-latent-dims",
    ),
    ("vae.experiment", ["--latent-dims", "1", "--out", "{out}/e"], "--latent-dims"),
    ("vae.experiment", ["--quick", "--data", "{missing}.npz", "--out", "{out}/q"], "does not exist"),
    ("vae.train", ["--max-epochs", "3", "--out", "{out}/t"], "did you mean --epochs?"),
    ("vae.classifier", ["--head", "linea", "--out", "{out}/c"], "did you mean linear?"),
    ("vae.report", ["{missing}.json"], "cannot read"),
    ("vae.report", ["{gan_run}/config.json"], "not a results.json"),
    ("vae.loglik", ["--run", "{missing}"], "does not exist"),
    ("vae.loglik", ["--run", "{not_a_run}"], "not a run folder"),
    ("vae.loglik", ["--run", "{vae_corrupt}"], "corrupted"),
    ("vae.loglik", ["--run", "{gan_run}"], "'gan' run"),
    ("vae.loglik", ["--run", "{vae_corrupt}", "--num-samples", "0"], "--num-samples"),
    ("vae.figures", ["--run", "{missing}"], "does not exist"),
    ("gan/train.py", ["--sampler", "vmf", "--out", "{out}/g"], "--prior-checkpoint"),
    ("gan/train.py", ["--data", "{wrong_keys}", "--out", "{out}/g"], "lacks key"),
    ("gan/train.py", ["--iterations", "0", "--out", "{out}/g"], "iterations"),
    ("gan/train.py", ["--no-such-flag"], "unknown option --no-such-flag"),
    ("gan.classifier", ["--data", "{missing}.npz", "--out", "{out}/w"], "does not exist"),
    ("gan.fidelity", ["--run", "{missing}"], "does not exist"),
    ("gan.fidelity", ["--run", "{vae_corrupt}"], "'vae' run"),
    ("gan.fidelity", ["--run", "{gan_run}", "--num-samples", "5"], "--num-samples"),
    ("gan.fidelity", ["--run", "{gan_run}", "--reference", "none"], "generator.pt"),
    ("gan.figures", ["--run", "{not_a_run}"], "not a run folder"),
    ("gan.report", ["{missing}"], "does not exist"),
    ("gan.report", ["{not_a_run}"], "fidelity"),
    ("benchmarks.vae_speed", ["--steps", "0"], "--steps"),
    ("benchmarks.vmf_latent", ["--dims", "1"], "--dims"),
    ("benchmarks.vmf_latent", ["--svae", "{missing}"], "s-vae-pytorch"),
    ("benchmarks.vmf_sampling", ["--repeats", "0", "--no-write"], "--repeats"),
    ("ckd.train", ["--teacher", "{missing}", "--data", QUICK, "--out", "{out}/k"], "does not exist"),
    ("ckd.train", ["--loss", "ckd", "--teacher", "{vae_corrupt}", "--data", QUICK, "--out", "{out}/k"], "corrupt"),
    ("ckd.train", ["--loss", "kd", "--data", QUICK, "--out", "{out}/k"], "needs --teacher"),
    ("ckd.teacher", ["--data", "{wrong_keys}", "--out", "{out}/t"], "lacks key"),
    ("ckd.experiment", ["--preset", "imagenet-table9"], "invalid choice"),
    ("ckd.normalization_check", ["--checkpoint", "{corrupt_pt}"], "corrupt"),
    ("ckd.figures", ["--teacher", "{not_a_run}", "--student", "{not_a_run}", "--data", QUICK], "{not_a_run}"),
    ("examples.figure1_demo", ["--latent-dim", "1"], "--latent-dim"),
    ("examples.figure1_demo", ["--data", "{wrong_keys}"], "lacks key"),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    base = tmp_path_factory.mktemp("mistakes")
    paths = _fixtures(base)
    cases = [
        {"target": target, "argv": [arg.format(**paths) for arg in argv], "watch": str(base)}
        for target, argv, _ in CASES
    ]
    (base / "cases.json").write_text(json.dumps(cases))
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "cli" / "driver.py"),
            str(base / "cases.json"),
            str(base / "results.json"),
        ],
        check=True,
        cwd=ROOT,
        timeout=600,
    )
    results = json.loads((base / "results.json").read_text())
    (base / "cases.json").unlink()
    (base / "results.json").unlink()
    return results


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{t} {' '.join(a)}" for t, a, _ in CASES])
def test_a_mistake_gets_one_error_line_and_leaves_no_file(outcomes, index):
    outcome, (_, _, word) = outcomes[index], CASES[index]
    lines = outcome["stderr"].strip().splitlines()
    assert outcome["status"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), outcome
    assert word.split("/")[-1].strip("{}") in lines[0] if word.startswith("{") else word in lines[0], (word, lines[0])
    assert not outcome["new_files"], outcome["new_files"]
