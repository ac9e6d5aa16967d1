"""gan/train.py end to end on tiny configs: files written, exact resume, schedule, config errors, old folders."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.cli import run_cli
from common.run import learning_rate_factor, read_metrics
from gan.config import GANConfig, parse_config
from gan.sampling import load_sampler
from gan.train import main
from tests.gan.helpers import tiny_args

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
    assert torch.load(out / "last.pt")["step"] == 2 and not (out / "checkpoints").exists()
    assert (out / "samples" / "iter_0000002.png").is_file()
    from PIL import Image

    width, height = Image.open(out / "samples" / "iter_0000002.png").size
    assert width > 3 * (10 * 34 + 2) and height > 3 * (10 * 34 + 2)  # the 10x10 grid enlarged 3x, with its labels
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    sampler = load_sampler(out)
    labels = torch.tensor([0, 9])
    images = sampler.decode(sampler.sample_latent(labels), torch.eye(10)[labels])
    assert images.shape == (2, 3, 32, 32) and 0 <= images.min() and images.max() <= 1


def _weights(out):
    checkpoint = torch.load(out / "last.pt")
    return checkpoint["model"], checkpoint["discriminator"]


def test_resume_equals_straight_run(fake_cifar, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    main(tiny_args(fake_cifar, straight, "--iterations", "4", "--ema-decay", "0.5"))
    main(tiny_args(fake_cifar, interrupted, "--iterations", "4", "--ema-decay", "0.5", "--stop-after", "2"))
    assert torch.load(interrupted / "last.pt")["step"] == 2
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
    with pytest.raises(ValueError, match=r"learning_rate_g: 0.0002 -> 0.001"):
        main(tiny_args(fake_cifar, out, "--iterations", "1", "--resume", "--learning-rate-g", "1e-3"))
    with pytest.raises(ValueError, match="no last.pt"):
        main(tiny_args(fake_cifar, tmp_path / "empty", "--resume"))


def test_a_folder_of_the_earlier_layout_is_refused_with_what_to_do(fake_cifar, tmp_path, capsys):
    out = tmp_path / "old"
    (out / "checkpoints" / "iter_0000002").mkdir(parents=True)
    (out / "checkpoints" / "latest").write_text("iter_0000002\n")
    (out / "config.json").write_text(json.dumps({"kind": "gan", "config": {"lr_g": 2e-4}}))
    code = run_cli(main, tiny_args(fake_cifar, out, "--iterations", "4", "--resume"))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "earlier gan/train.py" in err and "new --out" in err and "learning_rate_g" in err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.json"]  # left as it was


def test_vmf_run_keeps_prior_in_generator_file(fake_cifar, tmp_path):
    classifier = tmp_path / "classifier.pt"
    torch.save({"model": {"head.weight": torch.randn(10, 16)}}, classifier)
    out = tmp_path / "run"
    main(
        tiny_args(
            fake_cifar,
            out,
            "--iterations",
            "1",
            "--sampler",
            "vmf",
            "--prior-checkpoint",
            str(classifier),
            "--concentration",
            "20",
        )
    )
    classifier.unlink()  # the run folder must not depend on the classifier file any more
    sampler = load_sampler(out)
    assert sampler.spherical
    z = sampler.sample_latent(torch.arange(10))
    torch.testing.assert_close(z.norm(dim=1), torch.full((10,), 4.0))


def test_learning_rate_reaches_zero_at_configured_iteration(fake_cifar, tmp_path):
    config = GANConfig(iterations=50_000)
    assert learning_rate_factor(config.schedule, 0, config.iterations) == 1.0
    assert learning_rate_factor(config.schedule, 25_000, config.iterations) == pytest.approx(0.5, abs=1e-12)
    assert learning_rate_factor(config.schedule, 49_999, config.iterations) == pytest.approx(1 / 50_000, abs=1e-12)
    assert learning_rate_factor(config.schedule, 50_000, config.iterations) == 0.0
    # what the optimizers stepped with, read back from them in the run
    out = tmp_path / "run"
    main(tiny_args(fake_cifar, out, "--iterations", "4", "--learning-rate-g", "1e-3"))
    rates = [r["learning_rate_g"] for r in read_metrics(out / "metrics.jsonl")]
    assert rates == pytest.approx([1e-3, 0.75e-3, 0.5e-3, 0.25e-3], rel=1e-12)


def test_defaults_are_the_reference_protocol():
    config = parse_config([])
    assert (config.n_dis, config.learning_rate_g, config.learning_rate_d, config.beta1, config.beta2) == (
        5,
        2e-4,
        2e-4,
        0.0,
        0.9,
    )
    assert (config.batch_size_d, config.batch_size_g, config.iterations) == (64, 128, 50_000)
    assert (config.loss, config.schedule, config.latent_dim, config.g_channels, config.d_channels) == (
        "hinge",
        "linear",
        128,
        256,
        128,
    )


def test_config_precedence_and_errors(tmp_path):
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"iterations": 7, "n_dis": 3}))
    config = parse_config(["--preset", "tiny", "--config", str(config_file), "--n-dis", "4"])
    assert (config.g_channels, config.iterations, config.n_dis) == (16, 7, 4)  # preset < file < flag
    config_file.write_text(json.dumps({"iteratoins": 7}))
    with pytest.raises(ValueError, match="unknown key 'iteratoins'"):
        parse_config(["--config", str(config_file)])
    with pytest.raises(ValueError, match="unknown option --n-critic"):
        parse_config(["--n-critic", "5"])
    with pytest.raises(ValueError, match="--sampler: must be one of gaussian, vmf, sphere, vmf-orthogonal"):
        parse_config(["--sampler", "uniform"])
    with pytest.raises(ValueError, match="needs --prior-checkpoint"):
        parse_config(["--sampler", "vmf"])
    with pytest.raises(ValueError, match="--n-dis must be positive"):
        parse_config(["--n-dis", "0"])


def _tiny_classifier(path):
    from common.wrn import WideResNet

    torch.manual_seed(0)
    torch.save(
        {
            "model": WideResNet(depth=10, width=1).state_dict(),
            "num_classes": 10,
            "config": {"depth": 10, "width": 1, "head": "linear"},
        },
        path,
    )
    return path


def test_periodic_fidelity_takes_the_reference_from_data(fake_cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # torch-fidelity's cache stays in tmp
    import common.data

    def offline(*args, **kwargs):  # the torchvision download must not be the reference when --data is given
        raise common.data.DataUnavailableError("offline")

    monkeypatch.setattr(
        "eval.fidelity.load_cifar10",
        lambda path=None, **kw: offline() if path is None else common.data.load_cifar10(path),
    )
    classifier = _tiny_classifier(tmp_path / "classifier.pt")
    out = tmp_path / "run"
    main(
        tiny_args(
            fake_cifar,
            out,
            "--iterations",
            "2",
            "--eval-every",
            "2",
            "--eval-num-samples",
            "20",
            "--eval-classifier",
            str(classifier),
        )
    )
    scores = [r for r in read_metrics(out / "metrics.jsonl") if "inception_score_mean" in r]
    assert len(scores) == 1 and scores[0]["iteration"] == 2
    # IS lies in [1, C]; FID of 20 generated images against the 40 training images is positive
    assert 1.0 <= scores[0]["inception_score_mean"] <= 10.0
    assert scores[0]["frechet_inception_distance"] > 0.0
    # the reference statistics were computed before training, under the name of the --data file
    cached = os.listdir(tmp_path / "torch-home" / "fidelity_cache")
    assert any(name.startswith("vmfprior-fake-cifar10-") and "-train-n40-" in name for name in cached)


@pytest.mark.parametrize("bad", ["reference", "inception", "classifier"])
def test_unusable_evaluation_fails_at_startup(fake_cifar, tmp_path, bad, capsys):
    extra = {
        "reference": ["--eval-reference", str(tmp_path / "missing.npz")],
        "inception": ["--eval-inception-weights", str(tmp_path / "missing.pth")],
        "classifier": ["--eval-classifier", str(tmp_path / "missing.pt")],
    }[bad]
    out = tmp_path / "run"
    code = run_cli(main, tiny_args(fake_cifar, out, "--iterations", "1", "--eval-every", "1", *extra))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "missing." in err
    assert not out.exists()  # nothing was trained, and the folder it would have made is gone


def test_launcher_decides_mixed_precision_unless_the_flag_is_given(fake_cifar, tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what accelerate launch --mixed_precision bf16 sets
    try:
        for name, flag, expected in (("launcher", [], "bf16"), ("flag", ["--mixed-precision", "no"], "no")):
            AcceleratorState._reset_state(reset_partial_state=True)  # a fresh process would read the variable
            main(tiny_args(fake_cifar, tmp_path / name, "--iterations", "1", *flag))
            assert torch.load(tmp_path / name / "last.pt")["state"]["mixed_precision"] == expected
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_process_group_timeout_outlasts_an_evaluation(tmp_path):
    import datetime

    from accelerate.utils import InitProcessGroupKwargs

    from gan.train import build_accelerator

    # NCCL's default of 10 minutes is shorter than a 50k-sample IS/FID on the main process
    accelerator = build_accelerator(GANConfig(), tmp_path)
    assert isinstance(accelerator.init_handler, InitProcessGroupKwargs)
    assert accelerator.init_handler.timeout >= datetime.timedelta(hours=1)


def test_resume_drops_what_was_logged_or_half_written_after_the_checkpoint(fake_cifar, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    extra = ("--iterations", "4", "--checkpoint-every", "2")
    main(tiny_args(fake_cifar, straight, *extra))
    main(tiny_args(fake_cifar, interrupted, *extra, "--stop-after", "2"))
    (interrupted / ".last.pt.abc.tmp").write_bytes(b"\x00" * 10)  # an interrupted save of iteration 4
    with open(interrupted / "metrics.jsonl", "a") as stream:  # logged after the checkpoint, before the kill
        stream.write(json.dumps({"iteration": 3, "d_loss": 99.0}) + "\n")
    assert main(tiny_args(fake_cifar, interrupted, *extra, "--resume"))["iteration"] == 4
    assert not (interrupted / ".last.pt.abc.tmp").exists()
    records = read_metrics(interrupted / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2, 3, 4] and all(r["d_loss"] != 99.0 for r in records)
    for expected, actual in zip(_weights(straight), _weights(interrupted)):
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6)


def test_ema_generator_file_holds_its_own_batch_norm_statistics(fake_cifar, tmp_path):
    from gan.ema import recompute_batch_norm_statistics
    from gan.latent import GaussianSampler
    from gan.models import Generator
    from gan.train import EMA_STATISTICS_BATCH, EMA_STATISTICS_SAMPLES, EMA_STATISTICS_SEED

    out = tmp_path / "run"
    main(tiny_args(fake_cifar, out, "--iterations", "2", "--ema-decay", "0.5"))
    saved = torch.load(out / "generator.pt")
    reference = Generator(16, 8)
    reference.load_state_dict(saved["ema"])
    recompute_batch_norm_statistics(
        reference, GaussianSampler(16), EMA_STATISTICS_SAMPLES, EMA_STATISTICS_BATCH, EMA_STATISTICS_SEED
    )
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(saved["ema"][key], value, rtol=0, atol=1e-6)
    # and they are not the live generator's, which the EMA used to copy
    assert not torch.allclose(saved["ema"]["output_norm.running_mean"], saved["generator"]["output_norm.running_mean"])


def test_presets_are_the_published_protocols():
    chainer, mimicry = parse_config(["--preset", "chainer"]), parse_config(["--preset", "mimicry"])
    assert chainer == parse_config([])  # the defaults are the chainer protocol
    assert (chainer.iterations, chainer.batch_size_d, chainer.batch_size_g, chainer.upsample) == (
        50_000,
        64,
        128,
        "nearest",
    )
    assert (mimicry.iterations, mimicry.n_dis, mimicry.batch_size_d, mimicry.batch_size_g, mimicry.upsample) == (
        100_000,
        5,
        64,
        64,
        "bilinear",
    )
    small = parse_config(["--preset", "small"])
    assert small.latent_dim == 64  # the penultimate width of gan.classifier --preset tiny, for --sampler vmf


def test_resume_from_the_runs_config_file(fake_cifar, tmp_path):
    out = tmp_path / "run"
    main(tiny_args(fake_cifar, out, "--iterations", "3", "--stop-after", "1"))
    # the run's config.json brings what the run computes, not its --stop-after (a per-invocation key)
    result = main(["--config", str(out / "config.json"), "--out", str(out), "--resume"])
    assert result["iteration"] == 3
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]


def test_a_non_finite_loss_stops_cleanly_with_one_error_line(fake_cifar, tmp_path, monkeypatch, capsys):
    import gan.train
    from gan.losses import get_loss

    class Exploding:
        def __init__(self):
            self.inner, self.calls = get_loss("hinge"), 0

        def discriminator(self, real, fake):
            self.calls += 1
            value = self.inner.discriminator(real, fake)
            return value * float("nan") if self.calls > 2 else value  # the D steps of iteration 2 blow up

        def generator(self, fake):
            return self.inner.generator(fake)

    monkeypatch.setattr(gan.train, "get_loss", lambda name: Exploding())
    out = tmp_path / "run"
    code = run_cli(
        main,
        tiny_args(fake_cifar, out, "--iterations", "4", "--n-dis", "2", "--checkpoint-every", "1", "--no-progress"),
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: non-finite loss at iteration 2") and err.count("\n") == 1
    assert torch.load(out / "last.pt")["step"] == 1  # the last finite checkpoint is kept
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1]
