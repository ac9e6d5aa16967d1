"""s-vae's own MNIST example (Davidson et al.'s reference package), run through vmfprior.svae.

The example lives in s-vae's repository, not here: set SVAE_PATH to a checkout of
https://github.com/nicola-decao/s-vae-pytorch to run this test (it is skipped otherwise). The example file
downloads MNIST and trains at import, so the test executes only its definitions (its imports, ``ModelVAE``,
``log_likelihood``, ``train``, ``test``) with the two imports it makes from ``hyperspherical_vae.distributions``
answered by :mod:`vmfprior.svae` (the swap docs/svae.md describes), and gives ``train``/``test`` small synthetic
loaders in place of its module-level MNIST loaders.
"""

import ast
import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import gammaln, ive

import vmfprior.svae

EXAMPLE = Path(os.environ.get("SVAE_PATH", "")) / "examples" / "mnist.py"
DEFINITIONS = {"ModelVAE", "log_likelihood", "train", "test"}


@pytest.fixture
def example(monkeypatch):
    """The example's definitions, executed with hyperspherical_vae.distributions -> vmfprior.svae."""
    if not os.environ.get("SVAE_PATH") or not EXAMPLE.is_file():
        pytest.skip("set SVAE_PATH to a checkout of s-vae-pytorch (its examples/mnist.py) to run this test")
    tree = ast.parse(EXAMPLE.read_text(), filename=str(EXAMPLE))
    kept = [
        node
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        or (isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name in DEFINITIONS)
    ]
    assert {node.name for node in kept if hasattr(node, "name")} == DEFINITIONS
    swapped = [
        node for node in kept if isinstance(node, ast.ImportFrom) and node.module == "hyperspherical_vae.distributions"
    ]
    assert sorted(alias.name for node in swapped for alias in node.names) == ["HypersphericalUniform", "VonMisesFisher"]
    package = types.ModuleType("hyperspherical_vae")
    package.distributions = vmfprior.svae
    monkeypatch.setitem(sys.modules, "hyperspherical_vae", package)
    monkeypatch.setitem(sys.modules, "hyperspherical_vae.distributions", vmfprior.svae)
    namespace = {"__name__": "svae_example"}
    exec(compile(ast.Module(body=kept, type_ignores=[]), str(EXAMPLE), "exec"), namespace)  # noqa: S102
    return namespace


def _loader(count, seed):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, 28, 28, generator=generator)  # what transforms.ToTensor() gives: [0, 1]
    labels = torch.randint(0, 10, (count,), generator=generator)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=16)


def _kl_to_uniform(concentration, m):
    """KL(vMF(mu, kappa) || uniform on S^(m-1)) in closed form (scipy): log C_m(kappa) + kappa A_m(kappa) + log area."""
    kappa, order = concentration.double().numpy(), m / 2 - 1
    # ive(v, k) = I_v(k) exp(-k): log I_v(k) = log ive(v, k) + k.
    log_normalizer = order * np.log(kappa) - (m / 2) * math.log(2 * math.pi) - (np.log(ive(order, kappa)) + kappa)
    mean_length = ive(m / 2, kappa) / ive(order, kappa)
    log_area = math.log(2) + (m / 2) * math.log(math.pi) - gammaln(m / 2)
    return torch.from_numpy(log_normalizer + kappa * mean_length + log_area)


def test_s_vae_example_model_uses_vmfprior_and_its_kl_is_exact(example):
    torch.manual_seed(0)
    model = example["ModelVAE"](h_dim=32, z_dim=6, distribution="vmf")  # the example's S^5 in R^6
    x = (torch.rand(16, 784) > 0.5).float()
    (z_mean, z_var), (q_z, p_z), z, logits = model(x)
    assert isinstance(q_z, vmfprior.svae.VonMisesFisher) and isinstance(p_z, vmfprior.svae.HypersphericalUniform)
    assert z_var.shape == (16, 1) and z.shape == (16, 6) and logits.shape == (16, 784) and p_z.dim == 5
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(16), atol=1e-5, rtol=0)
    kl = torch.distributions.kl_divergence(q_z, p_z)
    assert kl.shape == (16,)
    torch.testing.assert_close(kl.double(), _kl_to_uniform(z_var.detach()[:, 0], 6), atol=1e-4, rtol=1e-4)
    log_likelihood = float(example["log_likelihood"](model, x, n=10).detach())
    assert math.isfinite(log_likelihood) and log_likelihood < 0


def test_s_vae_training_loop_runs_its_steps_through_vmfprior(example, capsys):
    """The example's own train(): one optimizer step per batch, binarized (B, 784) inputs, concentration learnt."""
    torch.manual_seed(0)
    example["train_loader"], example["test_loader"] = _loader(64, seed=1), _loader(32, seed=2)
    model = example["ModelVAE"](h_dim=32, z_dim=6, distribution="vmf")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    seen, steps = [], []
    model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
    optimizer.register_step_post_hook(lambda *_: steps.append(1))
    concentration_weights = model.fc_var.weight.detach().clone()
    example["train"](model, optimizer)
    assert len(steps) == 4 and len(seen) == 4  # 64 images in batches of 16: one forward and one step per batch
    for batch in seen:
        assert batch.shape == (16, 784) and set(batch.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(model.fc_var.weight, concentration_weights)  # the KL's gradient reaches the concentration
    example["test"](model, optimizer)
    printed = capsys.readouterr().out
    assert "'ELBO'" in printed and "'LL'" in printed and "nan" not in printed
