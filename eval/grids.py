"""Image grids: per-class samples and class-to-class latent interpolations, saved as PNG.

Works with any conditional sampler of the protocol in :mod:`eval.sampler`. The command lines that turn a run
folder into grids are the applications' own: ``python -m vae.figures --run RUN`` and
``python -m gan.figures --run RUN``.
"""

import os

import torch
import torch.nn.functional as F

from eval.sampler import check_sampler, sampler_device

# Below this sine of the angle between the endpoints, the great circle through them is numerically
# undefined (parallel or antipodal); float64 cancellation makes smaller values meaningless.
PARALLEL_SINE_EPS = 1e-12


def save_image_grid(
    images, path, nrow, *, title=None, caption=None, row_labels=None, xlabel=None, ylabel=None, scale=3
):
    """Write a batch of images as one PNG grid, bare or as a labelled figure.

    With none of ``title``, ``caption``, ``row_labels``, ``xlabel``, ``ylabel`` the PNG is the bare grid
    (torchvision's ``save_image``: 2-pixel white padding). With any of them it is a matplotlib figure: the grid
    enlarged ``scale`` times (nearest neighbour, so pixels stay sharp), the title above, one label per row on the
    left, axis labels, and the caption (one line) below.

    Args:
        images: (N, C, H, W) float tensor with values in [0, 1]; C is 1 (grey) or 3 (RGB).
        path: output file name (parent folders are created).
        nrow: number of images per grid row.
        title: figure title.
        caption: one line under the grid saying how to read it.
        row_labels: one label per grid row (ceil(N / nrow) of them).
        xlabel: label of the horizontal axis (what the columns are).
        ylabel: label of the vertical axis (what the rows are).
        scale: on-screen pixels per image pixel in the labelled figure (>= 1).

    Returns:
        The path written.
    """
    from torchvision.utils import make_grid, save_image  # imported here: only figures need torchvision

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
    images = images.detach().float().clamp(0.0, 1.0).cpu()
    if all(value is None for value in (title, caption, row_labels, xlabel, ylabel)):
        save_image(images, path, nrow=int(nrow), padding=2, pad_value=1.0)
        return path
    rows = -(-images.shape[0] // int(nrow))
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"row_labels must give one label per row ({rows}), got {len(row_labels)}")
    if float(scale) < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    grid = make_grid(images, nrow=int(nrow), padding=2, pad_value=1.0)  # (3, H_grid, W_grid)
    _save_labelled_grid(
        grid.permute(1, 2, 0).numpy(),
        path,
        images.shape[-2],
        rows,
        title,
        caption,
        row_labels,
        xlabel,
        ylabel,
        float(scale),
    )
    return path


def _save_labelled_grid(grid, path, image_height, rows, title, caption, row_labels, xlabel, ylabel, scale):
    """Draw an (H, W, 3) grid in [0, 1] with its labels; margins are fixed in inches so text never overlaps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dpi = 100
    height, width = grid.shape[0] * scale / dpi, grid.shape[1] * scale / dpi  # inches of the grid itself
    longest = max((len(str(label)) for label in row_labels), default=0) if row_labels is not None else 0
    left = 0.3 + (0.35 if ylabel else 0.0) + 0.075 * longest
    top = 0.25 + (0.35 if title else 0.0)
    bottom = 0.15 + (0.3 if xlabel else 0.0) + (0.3 if caption else 0.0)
    right = 0.3
    total_width, total_height = left + width + right, bottom + height + top
    if caption:  # one line: widen the figure rather than wrap
        total_width = max(total_width, 0.3 + 0.068 * len(caption))
        right = total_width - left - width
    figure = plt.figure(figsize=(total_width, total_height), dpi=dpi)
    axis = figure.add_axes((left / total_width, bottom / total_height, width / total_width, height / total_height))
    axis.imshow(grid, interpolation="nearest", cmap="gray", vmin=0.0, vmax=1.0)
    axis.set_xticks([])
    if row_labels is not None:
        centers = [2 + row * (image_height + 2) + image_height / 2 for row in range(rows)]  # 2-pixel padding
        axis.set_yticks(centers, [str(label) for label in row_labels], fontsize=10)
        axis.tick_params(axis="y", length=0)
    else:
        axis.set_yticks([])
    for side in axis.spines.values():
        side.set_visible(False)
    if title:
        axis.set_title(title, fontsize=12, pad=6)
    if xlabel:
        axis.set_xlabel(xlabel, fontsize=10)
    if ylabel:
        axis.set_ylabel(ylabel, fontsize=10)
    if caption:
        figure.text(0.5, 0.1 / total_height, caption, ha="center", va="bottom", fontsize=9)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)


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


@torch.no_grad()
def class_sample_grid(sampler, path, per_class=10, *, title=None, caption=None):
    """Draw `per_class` samples of every class and save them with one row per class.

    Args:
        sampler: a conditional sampler (see module docstring).
        path: output PNG file.
        per_class: samples per class (the row length).
        title: when given (or ``caption``), the PNG is a labelled figure: rows labelled by class.
        caption: one line under the grid.

    Returns:
        images: (num_classes * per_class, C_img, H, W) in [0, 1], row-major as in the PNG.
    """
    check_sampler(sampler)
    if int(per_class) < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class}")
    num_classes = int(sampler.num_classes)
    device = sampler_device(sampler)
    labels = torch.arange(num_classes, device=device).repeat_interleave(int(per_class))  # (C * per_class,)
    latents = sampler.sample_latent(labels)  # (B, d)
    label_probs = F.one_hot(labels, num_classes).float()  # (B, C)
    images = sampler.decode(latents, label_probs)
    labelled = title is not None or caption is not None
    save_image_grid(
        images,
        path,
        nrow=int(per_class),
        title=title,
        caption=caption,
        row_labels=[f"class {c}" for c in range(num_classes)] if labelled else None,
        xlabel=f"{int(per_class)} samples per class" if labelled else None,
        ylabel="class" if labelled else None,
    )
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
def class_interpolation_grid(sampler, path, pairs, steps=10, *, title=None, caption=None):
    """Interpolate from a sample of one class to a sample of another; one row per class pair.

    Latents move along the great circle (slerp) for spherical samplers and along a straight line
    (lerp) for Gaussian ones; the label probabilities blend linearly between the two one-hot labels.

    Args:
        sampler: a conditional sampler (see module docstring).
        path: output PNG file.
        pairs: sequence of (start_class, end_class) pairs.
        steps: images per row, endpoints included (>= 2).
        title: when given (or ``caption``), the PNG is a labelled figure: each row labelled "start → end".
        caption: one line under the grid.

    Returns:
        images: (len(pairs) * steps, C_img, H, W) in [0, 1], row-major as in the PNG.
    """
    check_sampler(sampler)
    num_classes = int(sampler.num_classes)
    pairs = _check_pairs(pairs, num_classes)
    if int(steps) < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    device = sampler_device(sampler)
    starts = torch.tensor([p[0] for p in pairs], device=device)  # (P,)
    ends = torch.tensor([p[1] for p in pairs], device=device)
    interpolate = slerp if getattr(sampler, "spherical", False) else lerp
    latents = interpolate(sampler.sample_latent(starts), sampler.sample_latent(ends), steps)  # (P, steps, d)
    onehot_start = F.one_hot(starts, num_classes).float().unsqueeze(1)  # (P, 1, C)
    onehot_end = F.one_hot(ends, num_classes).float().unsqueeze(1)
    t = torch.linspace(0.0, 1.0, int(steps), device=device).view(1, -1, 1)  # (1, steps, 1)
    label_probs = (1.0 - t) * onehot_start + t * onehot_end  # (P, steps, C)
    images = sampler.decode(latents.flatten(0, 1), label_probs.flatten(0, 1))
    labelled = title is not None or caption is not None
    save_image_grid(
        images,
        path,
        nrow=int(steps),
        title=title,
        caption=caption,
        row_labels=[f"{start} \u2192 {end}" for start, end in pairs] if labelled else None,
        xlabel=f"{int(steps)} steps from the start class's sample to the end class's" if labelled else None,
        ylabel="class pair (start \u2192 end)" if labelled else None,
    )
    return images


def default_pairs(num_classes):
    """Class pairs (c, c+1 mod C) for c = 0..C-1: every class appears once as start and once as end."""
    return [(c, (c + 1) % num_classes) for c in range(num_classes)]
