"""What one gan/train.py iteration contains, seen through instrumented models and optimizers.

* Every fake image reaches D with the labels the generator drew it for, in the D step and in the G step, and the
  generator got the noise the latent sampler drew for those same labels.
* Every real image reaches D with its own label.
* Per iteration: n_dis discriminator updates, then one generator update, in that order.
"""

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

import gan.train
from gan.models import Discriminator, Generator
from gan.train import main
from tests.gan.helpers import tiny_args


class Recorder:
    """An ordered log of ("latent" | "G" | "D" | "step-G" | "step-D", payload) events."""

    def __init__(self):
        self.events = []
        self.generator_parameters = set()
        self.discriminator_parameters = set()


@pytest.fixture
def recorder(monkeypatch):
    log = Recorder()

    class RecordingGenerator(Generator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            log.generator_parameters |= {id(p) for p in self.parameters()}

        def forward(self, z, labels):
            images = super().forward(z, labels)
            log.events.append(("G", (z.detach().clone(), labels.clone(), images.detach().clone())))
            return images

    class RecordingDiscriminator(Discriminator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            log.discriminator_parameters |= {id(p) for p in self.parameters()}

        def forward(self, images, labels):
            log.events.append(("D", (images.detach().clone(), labels.clone())))
            return super().forward(images, labels)

    build_latent = gan.train.build_latent_sampler

    def recording_latent(*args, **kwargs):
        latent = build_latent(*args, **kwargs)
        sample = latent.sample

        def recorded_sample(labels):
            z = sample(labels)
            log.events.append(("latent", (labels.clone(), z.clone())))
            return z

        latent.sample = recorded_sample
        return latent

    def on_step(optimizer, args, kwargs):
        first = id(optimizer.param_groups[0]["params"][0])
        kind = (
            "step-G"
            if first in log.generator_parameters
            else "step-D"
            if first in log.discriminator_parameters
            else None
        )
        assert kind is not None, "an optimizer over neither network stepped"
        log.events.append((kind, None))

    monkeypatch.setattr(gan.train, "Generator", RecordingGenerator)
    monkeypatch.setattr(gan.train, "Discriminator", RecordingDiscriminator)
    monkeypatch.setattr(gan.train, "build_latent_sampler", recording_latent)
    handle = register_optimizer_step_post_hook(on_step)
    yield log
    handle.remove()


def _training_events(log):
    """The events of the training loop: from the noise of the first D step to the last G update (the fixed
    sample-grid noise is drawn before training, and the final grid is drawn after it)."""
    first_d = next(i for i, (kind, _) in enumerate(log.events) if kind == "D")
    start = max(i for i in range(first_d) if log.events[i][0] == "latent")
    end = max(i for i, (kind, _) in enumerate(log.events) if kind == "step-G")
    return log.events[start : end + 1]


@pytest.mark.parametrize("sampler", ["gaussian", "vmf"])
def test_fakes_reach_d_with_the_labels_they_were_drawn_for(recorder, fake_cifar, tmp_path, sampler):
    extra = []
    if sampler == "vmf":
        from common.wrn import WideResNet

        classifier = WideResNet(10, 1, 10)  # penultimate width 64
        torch.save({"model": classifier.state_dict()}, tmp_path / "classifier.pt")
        extra = [
            "--sampler",
            "vmf",
            "--prior-checkpoint",
            str(tmp_path / "classifier.pt"),
            "--concentration",
            "20",
            "--latent-dim",
            "64",
        ]
    iterations, n_dis, batch = 3, 2, 4
    main(
        tiny_args(
            fake_cifar,
            tmp_path / "run",
            "--iterations",
            str(iterations),
            "--n-dis",
            str(n_dis),
            "--sample-every",
            "1000",
            *extra,
        )
    )
    archive = np.load(fake_cifar)
    real_images = torch.from_numpy(archive["x_train"]).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N, 3, 32, 32)
    real_labels = torch.from_numpy(archive["y_train"])

    last_latent = last_generated = None
    d_steps = g_steps = 0
    for kind, payload in _training_events(recorder):
        if kind == "latent":
            last_latent = payload
        elif kind == "G":
            z, labels, images = payload
            assert torch.equal(z, last_latent[1]), "the generator got noise other than the sampler's last draw"
            assert torch.equal(labels, last_latent[0]), "the noise was drawn for other labels than G was given"
            last_generated = (labels, images)
        elif kind == "D":
            images, labels = payload
            if images.shape[0] == 2 * batch:  # D step: real batch, then the fakes
                fake_labels, fakes = last_generated
                assert torch.equal(images[batch:], fakes.to(images.dtype)), "D's fakes are not G's last images"
                assert torch.equal(labels[batch:], fake_labels), "D saw the fakes with other labels than G drew"
                for image, label in zip(images[:batch], labels[:batch]):
                    matches = (real_images - image).abs().flatten(1).amax(1) < 1e-6
                    assert matches.any() and (real_labels[matches] == label).all(), "a real image with a wrong label"
                d_steps += 1
            else:  # G step: D scores exactly G's output, with G's labels
                fake_labels, fakes = last_generated
                assert torch.equal(images, fakes) and torch.equal(labels, fake_labels)
                g_steps += 1
    assert (d_steps, g_steps) == (iterations * n_dis, iterations)


def test_each_iteration_is_n_dis_d_updates_then_one_g_update(recorder, fake_cifar, tmp_path):
    iterations, n_dis = 4, 3
    main(
        tiny_args(
            fake_cifar,
            tmp_path / "run",
            "--iterations",
            str(iterations),
            "--n-dis",
            str(n_dis),
            "--sample-every",
            "1000",
        )
    )
    steps = [kind for kind, _ in recorder.events if kind.startswith("step-")]
    assert steps.count("step-D") == iterations * n_dis and steps.count("step-G") == iterations
    assert steps == (["step-D"] * n_dis + ["step-G"]) * iterations


def test_a_resumed_run_takes_the_remaining_steps(recorder, fake_cifar, tmp_path):
    out, n_dis = tmp_path / "run", 3
    main(tiny_args(fake_cifar, out, "--iterations", "3", "--n-dis", str(n_dis), "--stop-after", "1"))
    recorder.events.clear()
    main(tiny_args(fake_cifar, out, "--iterations", "3", "--n-dis", str(n_dis), "--resume"))
    steps = [kind for kind, _ in recorder.events if kind.startswith("step-")]
    assert steps == (["step-D"] * n_dis + ["step-G"]) * 2
