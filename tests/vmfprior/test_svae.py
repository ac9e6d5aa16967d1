"""vmfprior.svae: s-vae's constructor conventions and shapes, densities against scipy, and a VAE written the way
s-vae's MNIST example is, trained for a few steps through the drop-in."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import gammaln
from scipy.stats import vonmises_fisher
from torch import nn
from torch.distributions import kl_divergence

from vmfprior.svae import HypersphericalUniform, VonMisesFisher


def _posterior(batch=6, dim=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    loc = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
    scale = torch.rand(batch, 1, generator=generator, dtype=torch.float64) * 30 + 1
    return VonMisesFisher(loc, scale)


def test_shapes_follow_s_vae():
    q = _posterior()
    assert q.scale.shape == (6, 1) and q.stddev.shape == (6, 1) and q.mean.shape == (6, 5)
    assert (
        q.rsample().shape == (6, 5) and q.rsample(3).shape == (3, 6, 5) and q.sample(torch.Size([2])).shape == (2, 6, 5)
    )
    assert q.log_prob(q.sample(3)).shape == (3, 6) and q.entropy().shape == (6,)
    uniform = HypersphericalUniform(4)  # S^4 in R^5, s-vae's convention
    assert uniform.dim == 4 and uniform.sample(7).shape == (7, 5) and uniform.entropy().shape == (1,)
    assert kl_divergence(q, uniform).shape == (6,)
    assert kl_divergence(q, _posterior(seed=1)).shape == (6,)
    assert q.batch_shape == (6,) and q.event_shape == (5,)  # torch's convention (s-vae reports (6, 5))
    assert q.expand((6,)).scale.shape == (6, 1)


def test_densities_and_kl_against_scipy():
    q = _posterior()
    z = q.sample(4)
    uniform = HypersphericalUniform(4)
    log_area = math.log(2) + 2.5 * math.log(math.pi) - gammaln(2.5)  # |S^4|
    for row in range(6):
        reference = vonmises_fisher(q.loc[row].numpy(), float(q.scale[row]))
        # atol: a log-density near 0 has no relative scale; log I_v is accurate to ~1e-11 absolute (test_bessel)
        np.testing.assert_allclose(
            q.log_prob(z)[:, row].numpy(), reference.logpdf(z[:, row].numpy()), rtol=1e-10, atol=1e-11
        )
        np.testing.assert_allclose(float(q.entropy()[row]), reference.entropy(), rtol=1e-10)
        np.testing.assert_allclose(float(kl_divergence(q, uniform)[row]), log_area - reference.entropy(), rtol=1e-9)
    np.testing.assert_allclose(uniform.log_prob(z).numpy(), np.full((4, 6), -log_area), rtol=1e-7)
    np.testing.assert_allclose(float(uniform.entropy()), log_area, rtol=1e-7)  # the default dtype, float32


def test_bad_dimension_is_refused():
    with pytest.raises(ValueError, match="sphere's own dimension"):
        HypersphericalUniform(0)


class SVAEStyleModel(nn.Module):
    """A VAE written as s-vae's MNIST example writes its vMF model; only the import line differs."""

    def __init__(self, h_dim=64, z_dim=4):
        super().__init__()
        self.z_dim = z_dim
        self.fc_e0 = nn.Linear(784, h_dim * 2)
        self.fc_e1 = nn.Linear(h_dim * 2, h_dim)
        self.fc_mean = nn.Linear(h_dim, z_dim)
        self.fc_var = nn.Linear(h_dim, 1)
        self.fc_d0 = nn.Linear(z_dim, h_dim)
        self.fc_d1 = nn.Linear(h_dim, h_dim * 2)
        self.fc_logits = nn.Linear(h_dim * 2, 784)

    def encode(self, x):
        x = F.relu(self.fc_e1(F.relu(self.fc_e0(x))))
        z_mean = self.fc_mean(x)
        z_mean = z_mean / z_mean.norm(dim=-1, keepdim=True)
        z_var = F.softplus(self.fc_var(x)) + 1  # the concentration, (B, 1), as s-vae names it
        return z_mean, z_var

    def forward(self, x):
        z_mean, z_var = self.encode(x)
        q_z = VonMisesFisher(z_mean, z_var)
        p_z = HypersphericalUniform(self.z_dim - 1)
        z = q_z.rsample()
        x_ = self.fc_logits(F.relu(self.fc_d1(F.relu(self.fc_d0(z)))))
        return (z_mean, z_var), (q_z, p_z), z, x_


def test_an_s_vae_style_model_trains_through_the_drop_in(single_thread):
    from common.data import QUICK_MNIST, binarize, load_mnist

    torch.manual_seed(0)
    images = load_mnist(QUICK_MNIST).x_train[:2048].view(-1, 784)
    model = SVAEStyleModel()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(60):
        x = binarize(images[(step * 64) % 2048 : (step * 64) % 2048 + 64])
        _, (q_z, p_z), _, x_ = model(x)
        loss_recon = nn.BCEWithLogitsLoss(reduction="none")(x_, x).sum(-1).mean()
        loss_kl = kl_divergence(q_z, p_z).mean()
        optimizer.zero_grad()
        (loss_recon + loss_kl).backward()
        assert model.fc_var.weight.grad.abs().sum() > 0  # the concentration gets gradients through the sampler
        optimizer.step()
        losses.append(float((loss_recon + loss_kl).detach()))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert np.isfinite(losses).all() and last < first - 100  # 543 nats at the start, below 300 after 60 steps
