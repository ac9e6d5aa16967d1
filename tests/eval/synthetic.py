"""A tiny synthetic image dataset, a small classifier trained on it, and samplers that draw from it.

Class c (of NUM_CLASSES = 4) is a dark noisy image whose quadrant c is bright: easy to classify with
near-certainty, so a trained classifier's Inception Score on balanced data is close to 4.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_CLASSES = 4


def make_images(labels, size=8, generator=None):
    """labels (N,) long -> (N, 3, size, size) uint8: dark noise with the label's quadrant bright."""
    half = size // 2
    noise = torch.randint(-30, 31, (labels.shape[0], 3, size, size), generator=generator)
    images = torch.full((labels.shape[0], 3, size, size), 50) + noise
    for c in range(NUM_CLASSES):
        rows, cols = divmod(c, 2)
        mask = labels == c
        images[mask, :, rows * half : (rows + 1) * half, cols * half : (cols + 1) * half] += 150
    return images.clamp(0, 255).to(torch.uint8)


def balanced_labels(count):
    return torch.arange(count) % NUM_CLASSES


class TinyClassifier(nn.Module):
    """conv -> ReLU -> 2x2 average pool -> flatten = 32-d features; `head` = Linear(32, NUM_CLASSES)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(32, NUM_CLASSES)

    def features(self, x):
        """(B, 3, H, W) in [0, 1] -> (B, 32)."""
        return F.adaptive_avg_pool2d(F.relu(self.conv(x)), 2).flatten(1)

    def forward(self, x):
        return self.head(self.features(x))


def train_tiny_classifier(seed=0, steps=150):
    """Train TinyClassifier on 512 synthetic 8x8 images; returns it in eval mode (train accuracy 100%)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    labels = balanced_labels(512)
    images = make_images(labels, generator=generator).float() / 255.0
    model = TinyClassifier()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
    return model.eval()


def load_tiny_classifier(path):
    """Loader for `eval.fidelity --classifier-loader tests.eval.synthetic:load_tiny_classifier`."""
    model = TinyClassifier()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    return model.eval()


class SyntheticSampler:
    """A 'perfect' conditional generator of the synthetic data (or pure noise with noise_images=True)."""

    def __init__(self, size=8, noise_images=False, latent_dim=4):
        self.num_classes = NUM_CLASSES
        self.latent_dim = latent_dim
        self.spherical = True
        self.size = size
        self.noise_images = noise_images

    def sample_latent(self, labels):
        z = torch.randn(labels.shape[0], self.latent_dim)
        return math.sqrt(self.latent_dim) * z / z.norm(dim=-1, keepdim=True)

    def decode(self, z, label_probs):
        labels = label_probs.argmax(-1)
        if self.noise_images:
            return torch.rand(labels.shape[0], 3, self.size, self.size)
        return make_images(labels, self.size).float() / 255.0
