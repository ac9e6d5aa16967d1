"""gan.fidelity's command line: the JSON it writes, and one error line when weights or reference data are missing.

The GAN run folder is a stand-in whose sampler draws synthetic 32x32 images; the feature extractor is the
tiny classifier of tests/eval (no network, no Inception weights).
"""

import json
import os

import numpy as np
import pytest
import torch

from common.cli import run_cli
from eval.fidelity import KEY_FID, KEY_IS_MEAN
from gan import fidelity
from tests.eval.synthetic import NUM_CLASSES, SyntheticSampler, balanced_labels, load_tiny_classifier, make_images


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A fake GAN run folder whose sampler makes 32x32 synthetic images; TORCH_HOME kept inside tmp_path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"kind": "gan", "config": {"sampler": "vmf"}}))
    monkeypatch.setattr(fidelity, "load_sampler", lambda path, device="cpu": SyntheticSampler(size=32))
    monkeypatch.setattr(fidelity, "load_classifier", load_tiny_classifier)
    return folder


@pytest.fixture(scope="session")
def tiny_classifier():
    from tests.eval.synthetic import train_tiny_classifier

    return train_tiny_classifier()


def test_cli_writes_json_with_classifier_extractor(run_dir, tmp_path, tiny_classifier, capsys):
    generator = torch.Generator().manual_seed(0)
    arrays = {}
    for split, count in (("train", 200), ("test", 40)):
        labels = balanced_labels(count)
        arrays[f"x_{split}"] = make_images(labels, 32, generator).permute(0, 2, 3, 1).numpy()  # NHWC
        arrays[f"y_{split}"] = labels.numpy()
    np.savez(tmp_path / "synthetic.npz", **arrays)
    checkpoint = tmp_path / "classifier.pt"
    torch.save({"model": tiny_classifier.state_dict()}, checkpoint)

    record = fidelity.main(
        [
            "--run",
            str(run_dir),
            "--num-samples",
            "100",
            "--batch-size",
            "50",
            "--cpu",
            "--reference",
            str(tmp_path / "synthetic.npz"),
            "--classifier-checkpoint",
            str(checkpoint),
        ]
    )
    written = [name for name in os.listdir(run_dir) if name.startswith("fidelity-")]
    assert len(written) == 1 and written[0].endswith("-n100.json")
    assert json.loads((run_dir / written[0]).read_text()) == record
    assert record["noise"] == "vmf" and record["num_samples"] == 100
    # 10 IS splits of 10 images: class counts per split fluctuate, so the score sits clearly below 4
    assert 2.5 < record[KEY_IS_MEAN] <= NUM_CLASSES + 1e-9 and 0 <= record[KEY_FID] < 50
    assert record["command"].startswith("python -m gan.fidelity --run")
    assert record["reference"].endswith("synthetic.npz") and record["reference_split"] == "train"
    assert record["reference_id"].startswith("vmfprior-synthetic-") and record["reference_id"].endswith("-train-n200")
    cache = os.listdir(tmp_path / "torch-home" / "fidelity_cache")
    assert cache and all(name.startswith("vmfprior-synthetic-") for name in cache)
    assert "IS " in capsys.readouterr().out


def test_cli_without_weights_prints_what_to_do(run_dir, tmp_path, capsys):
    code = run_cli(
        fidelity.main,
        [
            "--run",
            str(run_dir),
            "--num-samples",
            "10",
            "--reference",
            "none",
            "--cpu",
            "--inception-weights",
            str(tmp_path / "missing.pth"),
        ],
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "missing.pth" in err and "--inception-weights" in err


def test_cli_without_reference_data_prints_what_to_do(run_dir, monkeypatch, capsys):
    import common.data
    import eval.fidelity

    def offline(data=None, root=None):
        raise common.data.DataUnavailableError("could not download CIFAR10 (offline)")

    monkeypatch.setattr(eval.fidelity, "load_cifar10", offline)  # never the real download
    code = run_cli(
        fidelity.main, ["--run", str(run_dir), "--num-samples", "10", "--reference", "cifar10-train", "--cpu"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "could not download CIFAR10" in err and "--reference PATH.npz" in err


def test_cli_reports_class_aware_scores(run_dir, tmp_path, tiny_classifier, monkeypatch):
    from eval.classifiers import register_architecture
    from tests.eval.synthetic import TinyClassifier

    register_architecture("tiny-cli", lambda num_classes: TinyClassifier(), replace=True)
    generator = torch.Generator().manual_seed(1)
    arrays = {}
    for split, count in (("train", 200), ("test", 80)):
        labels = balanced_labels(count)
        arrays[f"x_{split}"] = make_images(labels, 32, generator).permute(0, 2, 3, 1).numpy()
        arrays[f"y_{split}"] = labels.numpy()
    np.savez(tmp_path / "labelled.npz", **arrays)
    checkpoint = tmp_path / "classifier.pt"
    torch.save({"model": tiny_classifier.state_dict()}, checkpoint)
    record = fidelity.main(
        [
            "--run",
            str(run_dir),
            "--num-samples",
            "80",
            "--batch-size",
            "40",
            "--cpu",
            "--no-cache",
            "--reference",
            str(tmp_path / "labelled.npz"),
            "--classifier-checkpoint",
            str(checkpoint),
            "--intra-fid",
            "--gan-test-classifier",
            str(checkpoint),
            "--gan-train",
            "tiny-cli",
            "--gan-train-epochs",
            "3",
            "--gan-train-batch-size",
            "20",
            "--gan-train-no-augmentation",
        ]
    )  # a flip would move the bright quadrant
    # the stand-in generator draws real-looking images of the asked class: the classifier gets them all right
    assert record["gan_test"] == 1.0 and record["gan_test_num_samples"] == 80
    assert record["gan_train"] > 0.9 and record["gan_train_num_samples"] == 200  # the training split's size
    assert len(record["intra_fid_per_class"]) == NUM_CLASSES and 0 <= record["intra_fid"] < 50
    written = json.loads((run_dir / f"fidelity-classifier-{record['feature_extractor'][11:]}-n80.json").read_text())
    assert written["gan_train"] == record["gan_train"]
    code = run_cli(
        fidelity.main,
        ["--run", str(run_dir), "--num-samples", "10", "--reference", "none", "--cpu", "--gan-train", "resnet-50"],
    )
    assert code == 2
