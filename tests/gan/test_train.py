"""gan/train.py end to end on tiny configs: files written, exact resume, schedule, config errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from gan.config import GANConfig, learning_rate_factor, parse_config
from gan.sampling import load_sampler
from gan.train import main
from tests.gan.helpers import tiny_args
from common.runs import read_metrics

REPO = Path(__file__).resolve().parents[2]


def test_two_iterations_by_path_write_checkpoint_and_grid(fake_cifar, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "gan/train.py", *tiny_args(fake_cifar, out, "--iterations", "2", "--sample-every", "2")]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}  # see conftest.single_thread
    result = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["kind"] == "gan"
    assert recorded["command"].startswith("gan/train.py ") and "--iterations 2" in recorded["command"]
    assert (out / "checkpoints" / "latest").read_text().strip() == "iter_0000002"
    assert (out / "checkpoints" / "iter_0000002" / "trainer.pt").is_file()
    assert (out / "samples" / "iter_0000002.png").is_file()
    from PIL import Image

    assert Image.open(out / "samples" / "iter_0000002.png").size == (10 * 34 + 2, 10 * 34 + 2)  # 10x10 grid
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    sampler = load_sampler(out)
    labels = torch.tensor([0, 9])
    images = sampler.decode(sampler.sample_latent(labels), torch.eye(10)[labels])
    assert images.shape == (2, 3, 32, 32) and 0 <= images.min() and images.max() <= 1


def _weights(out):
    folder = out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip()
    return load_file(folder / "model.safetensors"), load_file(folder / "model_1.safetensors")


def test_resume_equals_straight_run(fake_cifar, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    main(tiny_args(fake_cifar, straight, "--iterations", "4", "--ema-decay", "0.5"))
    main(tiny_args(fake_cifar, interrupted, "--iterations", "4", "--ema-decay", "0.5", "--stop-at", "2"))
    assert (interrupted / "checkpoints" / "latest").read_text().strip() == "iter_0000002"
    main(tiny_args(fake_cifar, interrupted, "--iterations", "4", "--ema-decay", "0.5", "--resume"))
    for expected, actual in zip(_weights(straight), _weights(interrupted)):
        assert expected.keys() == actual.keys()
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6)
    ema_expected = torch.load(straight / "generator.pt")["ema"]
    ema_actual = torch.load(interrupted / "generator.pt")["ema"]
    for key in ema_expected:
        torch.testing.assert_close(ema_actual[key], ema_expected[key], rtol=0, atol=1e-6)
    # the learning-rate factor of each logged iteration follows 1 - t / iterations on both runs
    factors = [r["lr_factor"] for r in read_metrics(interrupted / "metrics.jsonl")]
    assert factors == pytest.approx([1.0, 0.75, 0.5, 0.25])


def test_existing_run_needs_resume_and_same_config(fake_cifar, tmp_path):
    out = tmp_path / "run"
    main(tiny_args(fake_cifar, out, "--iterations", "1"))
    with pytest.raises(ValueError, match="--resume"):
        main(tiny_args(fake_cifar, out, "--iterations", "1"))
    with pytest.raises(ValueError, match=r"lr_g: 0.0002 -> 0.001"):
        main(tiny_args(fake_cifar, out, "--iterations", "1", "--resume", "--lr-g", "1e-3"))
    with pytest.raises(ValueError, match="no checkpoint"):
        main(tiny_args(fake_cifar, tmp_path / "empty", "--resume"))


def test_vmf_run_keeps_prior_in_generator_file(fake_cifar, tmp_path):
    classifier = tmp_path / "classifier.pt"
    torch.save({"model": {"head.weight": torch.randn(10, 16)}}, classifier)
    out = tmp_path / "run"
    main(tiny_args(fake_cifar, out, "--iterations", "1", "--sampler", "vmf", "--prior-checkpoint", str(classifier),
                   "--concentration", "20"))
    classifier.unlink()  # the run folder must not depend on the classifier file any more
    sampler = load_sampler(out)
    assert sampler.spherical
    z = sampler.sample_latent(torch.arange(10))
    torch.testing.assert_close(z.norm(dim=1), torch.full((10,), 4.0))


def test_learning_rate_reaches_zero_at_configured_iteration():
    config = GANConfig(iterations=50_000)
    assert learning_rate_factor(config, 0) == 1.0
    assert learning_rate_factor(config, 25_000) == pytest.approx(0.5, abs=1e-12)
    assert learning_rate_factor(config, 49_999) == pytest.approx(1 / 50_000, abs=1e-12)
    assert learning_rate_factor(config, 50_000) == 0.0
    assert learning_rate_factor(GANConfig(lr_decay="none"), 50_000) == 1.0


def test_defaults_are_the_reference_protocol():
    config = parse_config([])
    assert (config.n_dis, config.lr_g, config.lr_d, config.beta1, config.beta2) == (5, 2e-4, 2e-4, 0.0, 0.9)
    assert (config.batch_size_d, config.batch_size_g, config.iterations) == (64, 128, 50_000)
    assert (config.loss, config.lr_decay, config.latent_dim, config.g_channels, config.d_channels) == (
        "hinge", "linear", 128, 256, 128)


def test_config_precedence_and_errors(tmp_path):
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"iterations": 7, "n_dis": 3}))
    config = parse_config(["--preset", "tiny", "--config", str(config_file), "--n-dis", "4"])
    assert (config.g_channels, config.iterations, config.n_dis) == (16, 7, 4)  # preset < file < flag
    config_file.write_text(json.dumps({"iteratoins": 7}))
    with pytest.raises(ValueError, match="unknown keys \\['iteratoins'\\]"):
        parse_config(["--config", str(config_file)])
    with pytest.raises(ValueError, match="unrecognized arguments: --n-critic"):
        parse_config(["--n-critic", "5"])
    with pytest.raises(ValueError, match="sampler must be one of \\['gaussian', 'vmf', 'sphere'\\]"):
        parse_config(["--sampler", "uniform"])
    with pytest.raises(ValueError, match="needs --prior-checkpoint"):
        parse_config(["--sampler", "vmf"])
    with pytest.raises(ValueError, match="n_dis must be a positive int"):
        parse_config(["--n-dis", "0"])


def test_periodic_fidelity_with_a_project_classifier(fake_cifar, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # torch-fidelity's cache stays in tmp
    from gan.classifier import WideResNet

    classifier = tmp_path / "classifier.pt"
    torch.manual_seed(0)
    torch.save({"model": WideResNet(depth=10, width=1).state_dict(), "num_classes": 10,
                "config": {"depth": 10, "width": 1, "head": "linear"}}, classifier)
    out = tmp_path / "run"
    main(tiny_args(fake_cifar, out, "--iterations", "2", "--eval-every", "2", "--eval-num-samples", "20",
                   "--eval-reference", str(fake_cifar), "--eval-classifier", str(classifier)))
    scores = [r for r in read_metrics(out / "metrics.jsonl") if "inception_score_mean" in r]
    assert len(scores) == 1 and scores[0]["iteration"] == 2
    # IS lies in [1, C]; FID of 20 generated images against 40 reference images is positive
    assert 1.0 <= scores[0]["inception_score_mean"] <= 10.0
    assert scores[0]["frechet_inception_distance"] > 0.0
    # an unusable evaluation setting is logged and skipped; training still finishes
    main(tiny_args(fake_cifar, tmp_path / "run2", "--iterations", "1", "--eval-every", "1",
                   "--eval-reference", str(tmp_path / "missing.npz")))
    assert "skipping IS/FID" in capsys.readouterr().out


def test_resume_from_the_runs_config_file(fake_cifar, tmp_path):
    out = tmp_path / "run"
    main(tiny_args(fake_cifar, out, "--iterations", "3", "--stop-at", "1"))
    result = main(["--config", str(out / "config.json"), "--resume"])  # stop_at of the first call is not kept
    assert result["iteration"] == 3
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
