"""Image grids: per-class samples and class-to-class latent interpolations, saved as PNG.

Works with any conditional sampler that follows the interface in `.interfaces.md`
(`vae.sampling.load_sampler` / `gan.sampling.load_sampler`):

    sampler.num_classes: int ; sampler.latent_dim: int ; sampler.spherical: bool
    sampler.sample_latent(labels (B,) long) -> z (B, d)
    sampler.decode(z (B, d), label_probs (B, C) float) -> images (B, C_img, H, W) in [0, 1]

Command line:

    python -m eval.grids --checkpoint RUN_DIR [--out DIR] [--seed 0] [--per-class 10] [--steps 10]
"""

import argparse
import importlib
import json
import os

import torch
import torch.nn.functional as F

# Below this sine of the angle between the endpoints, the great circle through them is numerically
# undefined (parallel or antipodal); float64 cancellation makes smaller values meaningless.
PARALLEL_SINE_EPS = 1e-12

SAMPLER_MODULES = {"vae": "vae.sampling", "gan": "gan.sampling"}


def save_image_grid(images, path, nrow):
    """Write a batch of images as one PNG grid.

    Args:
        images: (N, C, H, W) float tensor with values in [0, 1]; C is 1 (grey) or 3 (RGB).
        path: output file name (parent folders are created).
        nrow: number of images per grid row.

    Returns:
        The path written.
    """
    from torchvision.utils import save_image  # imported here: only figures need torchvision

    if not torch.is_tensor(images) or images.dim() != 4:
        raise ValueError(f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images must hold at least one image, got an empty batch")
    if int(nrow) < 1:
        raise ValueError(f"nrow must be a positive integer, got {nrow}")
    if images.is_floating_point() and not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    save_image(images.detach().float().clamp(0.0, 1.0).cpu(), path, nrow=int(nrow), padding=2, pad_value=1.0)
    return path


def _check_endpoints(a, b, steps):
    if not torch.is_tensor(a) or not torch.is_tensor(b):
        raise ValueError(f"a and b must be tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape or a.dim() < 1:
        raise ValueError(f"a and b must have the same shape (..., d), got {tuple(a.shape)} and {tuple(b.shape)}")
    if int(steps) < 2:
        raise ValueError(f"steps must be at least 2 (both endpoints), got {steps}")


def _path_weights(steps, like):
    """(steps, 1) interpolation times 0, ..., 1 in float64 on like's device."""
    return torch.linspace(0.0, 1.0, int(steps), dtype=torch.float64, device=like.device).unsqueeze(-1)


def lerp(a, b, steps):
    """Straight-line interpolation between two batches of points.

    Args:
        a: (..., d) start points.
        b: (..., d) end points, same shape as a.
        steps: number of points on each path, endpoints included (>= 2).

    Returns:
        (..., steps, d) tensor: out[..., 0, :] == a and out[..., -1, :] == b exactly.
    """
    _check_endpoints(a, b, steps)
    t = _path_weights(steps, a)  # (steps, 1)
    a64, b64 = a.double().unsqueeze(-2), b.double().unsqueeze(-2)  # (..., 1, d)
    out = ((1.0 - t) * a64 + t * b64).to(a.dtype)
    out[..., 0, :] = a
    out[..., -1, :] = b
    return out


def _orthogonal_unit(u):
    """A deterministic unit vector orthogonal to each row of u (..., d); needs d >= 2.

    Gram-Schmidt on the coordinate axis where |u| is smallest, which is never close to u.
    """
    axis = u.abs().argmin(dim=-1, keepdim=True)  # (..., 1)
    e = torch.zeros_like(u).scatter_(-1, axis, 1.0)
    v = e - (e * u).sum(-1, keepdim=True) * u
    return v / v.norm(dim=-1, keepdim=True)


def slerp(a, b, steps):
    """Spherical interpolation (along the great circle) between points on spheres of any radius.

    Directions move along the great circle at constant angular speed; the radius moves linearly
    from |a| to |b| (so for endpoints on one sphere, e.g. radius sqrt(d), every point stays on it).
    Computed in float64 as cos(t θ) u + sin(t θ) v with u = a/|a| and v the unit tangent towards b,
    with θ = atan2(|b̂ - (u·b̂) u|, u·b̂), which stays accurate for nearly parallel endpoints where
    the textbook sin((1-t)θ)/sin θ form divides by ~0. For (nearly) antipodal endpoints every great
    circle fits; a deterministic one is chosen. Identical endpoints give a constant path.

    Args:
        a: (..., d) start points, nonzero, d >= 2.
        b: (..., d) end points, nonzero, same shape as a.
        steps: number of points on each path, endpoints included (>= 2).

    Returns:
        (..., steps, d) tensor in a's dtype: out[..., 0, :] == a and out[..., -1, :] == b exactly.
    """
    _check_endpoints(a, b, steps)
    if a.shape[-1] < 2:
        raise ValueError(f"slerp needs dimension d >= 2, got a of shape {tuple(a.shape)}")
    a64, b64 = a.double(), b.double()
    radius_a = a64.norm(dim=-1, keepdim=True)  # (..., 1)
    radius_b = b64.norm(dim=-1, keepdim=True)
    if (radius_a == 0).any() or (radius_b == 0).any():
        raise ValueError("slerp endpoints a and b must be nonzero vectors (a direction is undefined at 0)")
    u, w = a64 / radius_a, b64 / radius_b
    cosine = (u * w).sum(-1, keepdim=True)  # (..., 1)
    perp = w - cosine * u
    sine = perp.norm(dim=-1, keepdim=True)
    degenerate = sine < PARALLEL_SINE_EPS
    tangent = torch.where(degenerate, _orthogonal_unit(u), perp / sine.clamp_min(PARALLEL_SINE_EPS))
    # Parallel endpoints: angle 0 (the tangent is unused). Antipodal: angle pi along the chosen tangent.
    angle = torch.atan2(sine, cosine)
    angle = torch.where(degenerate & (cosine > 0), torch.zeros_like(angle), angle)
    angle = torch.where(degenerate & (cosine <= 0), torch.full_like(angle, torch.pi), angle)

    t = _path_weights(steps, a)  # (steps, 1)
    theta = angle.unsqueeze(-2) * t  # (..., steps, 1)
    direction = torch.cos(theta) * u.unsqueeze(-2) + torch.sin(theta) * tangent.unsqueeze(-2)
    radius = (1.0 - t) * radius_a.unsqueeze(-2) + t * radius_b.unsqueeze(-2)
    out = (radius * direction).to(a.dtype)
    out[..., 0, :] = a
    out[..., -1, :] = b
    return out


def _sampler_device(sampler):
    """Device on which to create label tensors for the sampler (its `device` attribute, else CPU)."""
    return torch.device(getattr(sampler, "device", "cpu"))


def _check_sampler(sampler):
    for name in ("num_classes", "sample_latent", "decode"):
        if not hasattr(sampler, name):
            raise TypeError(f"sampler must provide `{name}` (see .interfaces.md), got {type(sampler).__name__}")
    if int(sampler.num_classes) < 1:
        raise ValueError(f"sampler.num_classes must be positive, got {sampler.num_classes}")


@torch.no_grad()
def class_sample_grid(sampler, path, per_class=10):
    """Draw `per_class` samples of every class and save them with one row per class.

    Args:
        sampler: a conditional sampler (see module docstring).
        path: output PNG file.
        per_class: samples per class (the row length).

    Returns:
        images: (num_classes * per_class, C_img, H, W) in [0, 1], row-major as in the PNG.
    """
    _check_sampler(sampler)
    if int(per_class) < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class}")
    num_classes = int(sampler.num_classes)
    device = _sampler_device(sampler)
    labels = torch.arange(num_classes, device=device).repeat_interleave(int(per_class))  # (C * per_class,)
    latents = sampler.sample_latent(labels)  # (B, d)
    label_probs = F.one_hot(labels, num_classes).float()  # (B, C)
    images = sampler.decode(latents, label_probs)
    save_image_grid(images, path, nrow=int(per_class))
    return images


def _check_pairs(pairs, num_classes):
    pairs = [tuple(int(c) for c in pair) for pair in pairs]
    if not pairs:
        raise ValueError("pairs must list at least one (start_class, end_class) pair")
    for pair in pairs:
        if len(pair) != 2 or not all(0 <= c < num_classes for c in pair):
            raise ValueError(f"pairs must hold (start_class, end_class) with classes in [0, {num_classes}), got {pair}")
    return pairs


@torch.no_grad()
def class_interpolation_grid(sampler, path, pairs, steps=10):
    """Interpolate from a sample of one class to a sample of another; one row per class pair.

    Latents move along the great circle (slerp) for spherical samplers and along a straight line
    (lerp) for Gaussian ones; the label probabilities blend linearly between the two one-hot labels.

    Args:
        sampler: a conditional sampler (see module docstring).
        path: output PNG file.
        pairs: sequence of (start_class, end_class) pairs.
        steps: images per row, endpoints included (>= 2).

    Returns:
        images: (len(pairs) * steps, C_img, H, W) in [0, 1], row-major as in the PNG.
    """
    _check_sampler(sampler)
    num_classes = int(sampler.num_classes)
    pairs = _check_pairs(pairs, num_classes)
    if int(steps) < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    device = _sampler_device(sampler)
    starts = torch.tensor([p[0] for p in pairs], device=device)  # (P,)
    ends = torch.tensor([p[1] for p in pairs], device=device)
    interpolate = slerp if getattr(sampler, "spherical", False) else lerp
    latents = interpolate(sampler.sample_latent(starts), sampler.sample_latent(ends), steps)  # (P, steps, d)
    onehot_start = F.one_hot(starts, num_classes).float().unsqueeze(1)  # (P, 1, C)
    onehot_end = F.one_hot(ends, num_classes).float().unsqueeze(1)
    t = torch.linspace(0.0, 1.0, int(steps), device=device).view(1, -1, 1)  # (1, steps, 1)
    label_probs = (1.0 - t) * onehot_start + t * onehot_end  # (P, steps, C)
    images = sampler.decode(latents.flatten(0, 1), label_probs.flatten(0, 1))
    save_image_grid(images, path, nrow=int(steps))
    return images


def read_run_kind(run_dir):
    """Read RUN_DIR/config.json ({"kind": ..., "config": {...}}) and return its kind."""
    config_path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"no config.json in run folder {run_dir!r}; pass a folder written by vae/ or gan/ training"
        )
    with open(config_path) as f:
        record = json.load(f)
    kind = record.get("kind") if isinstance(record, dict) else None
    if kind not in SAMPLER_MODULES:
        raise ValueError(f"{config_path}: 'kind' must be one of {sorted(SAMPLER_MODULES)}, got {kind!r}")
    return kind


def load_run_sampler(run_dir, device="cpu"):
    """Build the sampler of a run folder through vae.sampling or gan.sampling (imported on demand)."""
    kind = read_run_kind(run_dir)
    module = importlib.import_module(SAMPLER_MODULES[kind])
    return module.load_sampler(run_dir, device=device)


def default_pairs(num_classes):
    """Class pairs (c, c+1 mod C) for c = 0..C-1: every class appears once as start and once as end."""
    return [(c, (c + 1) % num_classes) for c in range(num_classes)]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Per-class sample grid and class-to-class interpolations as PNG.")
    parser.add_argument("--checkpoint", required=True, help="run folder with config.json (vae or gan)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/figures)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-class", type=int, default=10, help="samples per class in the sample grid")
    parser.add_argument("--steps", type=int, default=10, help="images per interpolation row")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    sampler = load_run_sampler(args.checkpoint, device=args.device)
    out_dir = args.out or os.path.join(args.checkpoint, "figures")
    samples_path = os.path.join(out_dir, f"samples-seed{args.seed}.png")
    interp_path = os.path.join(out_dir, f"interpolations-seed{args.seed}.png")
    class_sample_grid(sampler, samples_path, per_class=args.per_class)
    class_interpolation_grid(sampler, interp_path, default_pairs(int(sampler.num_classes)), steps=args.steps)
    method = "slerp" if getattr(sampler, "spherical", False) else "lerp"
    print(f"wrote {samples_path}")
    print(f"wrote {interp_path} ({method})")


if __name__ == "__main__":
    main()
