"""gan/train.py end to end on tiny configs: files written, exact resume, schedule, config errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from common.cli import run_cli
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


def _tiny_classifier(path):
    from common.wrn import WideResNet

    torch.manual_seed(0)
    torch.save({"model": WideResNet(depth=10, width=1).state_dict(), "num_classes": 10,
                "config": {"depth": 10, "width": 1, "head": "linear"}}, path)
    return path


def test_periodic_fidelity_takes_the_reference_from_data(fake_cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # torch-fidelity's cache stays in tmp
    import common.data

    def offline(*args, **kwargs):  # the torchvision download must not be the reference when --data is given
        raise common.data.DataUnavailableError("offline")

    monkeypatch.setattr("eval.fidelity.load_cifar10", lambda path=None, **kw: offline() if path is None
                        else common.data.load_cifar10(path))
    classifier = _tiny_classifier(tmp_path / "classifier.pt")
    out = tmp_path / "run"
    main(tiny_args(fake_cifar, out, "--iterations", "2", "--eval-every", "2", "--eval-num-samples", "20",
                   "--eval-classifier", str(classifier)))
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
    extra = {"reference": ["--eval-reference", str(tmp_path / "missing.npz")],
             "inception": ["--eval-inception-weights", str(tmp_path / "missing.pth")],
             "classifier": ["--eval-classifier", str(tmp_path / "missing.pt")]}[bad]
    out = tmp_path / "run"
    code = run_cli(main, tiny_args(fake_cifar, out, "--iterations", "1", "--eval-every", "1", *extra))
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "missing." in err
    assert not (out / "metrics.jsonl").exists() and not (out / "checkpoints").exists()  # nothing was trained


def test_launcher_decides_mixed_precision_unless_the_flag_is_given(fake_cifar, tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what accelerate launch --mixed_precision bf16 sets
    try:
        for name, flag, expected in (("launcher", [], "bf16"), ("flag", ["--mixed-precision", "no"], "no")):
            AcceleratorState._reset_state(reset_partial_state=True)  # a fresh process would read the variable
            main(tiny_args(fake_cifar, tmp_path / name, "--iterations", "1", *flag))
            trainer = torch.load(tmp_path / name / "checkpoints" / "iter_0000001" / "trainer.pt")
            assert trainer["mixed_precision"] == expected
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


def test_half_written_checkpoint_folder_is_ignored_by_resume(fake_cifar, tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    extra = ("--iterations", "4", "--checkpoint-every", "2")
    main(tiny_args(fake_cifar, straight, *extra))
    main(tiny_args(fake_cifar, interrupted, *extra, "--stop-at", "2"))
    # an interrupted save of iteration 4: a folder with a truncated weights file, no trainer.pt, no pointer
    partial = interrupted / "checkpoints" / "iter_0000004"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00" * 10)
    (partial / "stray.tmp").write_text("")
    with open(interrupted / "metrics.jsonl", "a") as stream:  # logged after the checkpoint, before the kill
        stream.write(json.dumps({"iteration": 3, "d_loss": 99.0}) + "\n")
    assert main(tiny_args(fake_cifar, interrupted, *extra, "--resume"))["iteration"] == 4
    assert not (partial / "stray.tmp").exists()  # the leftover was replaced, not mixed into the new checkpoint
    records = read_metrics(interrupted / "metrics.jsonl")
    assert [r["iteration"] for r in records] == [1, 2, 3, 4] and all(r["d_loss"] != 99.0 for r in records)
    for expected, actual in zip(_weights(straight), _weights(interrupted)):
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6)


class _RecordingAccelerator:
    """Stands in for Accelerator in _save_checkpoint: records the order of saves, barriers and the pointer."""

    is_main_process, num_processes, mixed_precision = True, 2, "no"

    def __init__(self, run_dir):
        self.run_dir, self.events = run_dir, []

    def _pointer(self):
        pointer = self.run_dir / "checkpoints" / "latest"
        return pointer.read_text().strip() if pointer.is_file() else None

    def save_state(self, folder):
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.events.append(("save_state", self._pointer()))

    def wait_for_everyone(self):
        self.events.append(("barrier", self._pointer()))

    def unwrap_model(self, model):
        return model


def test_pointer_moves_only_after_a_barrier_that_follows_every_save(tmp_path):
    from gan.latent import GaussianSampler
    from gan.models import Generator
    from gan.train import _save_checkpoint

    accelerator = _RecordingAccelerator(tmp_path)
    _save_checkpoint(accelerator, tmp_path, 3, GANConfig(), Generator(4, 4), None, GaussianSampler(4))
    saved = accelerator.events.index(("save_state", None))
    # the other processes write their RNG states inside save_state: the pointer must still be unset at the first
    # barrier after it, and set only afterwards
    assert accelerator.events[saved + 1] == ("barrier", None)
    assert accelerator.events[-1] == ("barrier", "iter_0000003")
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "iter_0000003"
    trainer = torch.load(tmp_path / "checkpoints" / "iter_0000003" / "trainer.pt")
    assert trainer["num_processes"] == 2 and trainer["iteration"] == 3


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
    recompute_batch_norm_statistics(reference, GaussianSampler(16), EMA_STATISTICS_SAMPLES, EMA_STATISTICS_BATCH,
                                    EMA_STATISTICS_SEED)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(saved["ema"][key], value, rtol=0, atol=1e-6)
    # and they are not the live generator's, which the EMA used to copy
    assert not torch.allclose(saved["ema"]["output_norm.running_mean"], saved["generator"]["output_norm.running_mean"])


def test_presets_are_the_published_protocols():
    chainer, mimicry = parse_config(["--preset", "chainer"]), parse_config(["--preset", "mimicry"])
    assert chainer == parse_config([])  # the defaults are the chainer protocol
    assert (chainer.iterations, chainer.batch_size_d, chainer.batch_size_g, chainer.upsample) == (
        50_000, 64, 128, "nearest")
    assert (mimicry.iterations, mimicry.n_dis, mimicry.batch_size_d, mimicry.batch_size_g, mimicry.upsample) == (
        100_000, 5, 64, 64, "bilinear")
    small = parse_config(["--preset", "small"])
    assert small.latent_dim == 64  # the penultimate width of gan.classifier --preset tiny, for --sampler vmf


def test_resume_from_the_runs_config_file(fake_cifar, tmp_path):
    out = tmp_path / "run"
    main(tiny_args(fake_cifar, out, "--iterations", "3", "--stop-at", "1"))
    result = main(["--config", str(out / "config.json"), "--resume"])  # stop_at of the first call is not kept
    assert result["iteration"] == 3
    assert [r["iteration"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
