"""Cost of one vMF latent step as a VAE runs it, against Gaussian, Power Spherical and (optionally) s-vae latents.

    python -m benchmarks.vmf_latent [--svae PATH] [--write BENCHMARKS.md] [--batches 64 1024 65536] [--dims 5 10 64]
                                    [--device cpu|cuda] [--no-compile] [--hvae-batches 64 256]

A *latent step* is what a VAE does with its encoder outputs every batch, timed forward and backward together:
fresh encoder outputs that require grad, the distribution built from them (unit ``loc``, concentration
softplus + 1), ``rsample``, KL to the uniform prior (N(0, I) for the Gaussian floor), and backward of
``sum(z * weights) + sum(KL)``. The *HVAE step* is a whole training step of a small VAE (784-256-128 MLP encoder,
latent, 128-256-784 decoder, Bernoulli loss, Adam) on a fixed batch of random binary images.

Peers are timed in turn within each repeat (interleaved, one torch thread), and each figure is the median over
repeats of the mean time of a block of calls, so that the ratios hold even when a shared CPU changes speed.
The *compiled* column times the same vmfprior step with the latent (build, rsample, KL) compiled by
``torch.compile(fullgraph=True)`` and backward through the compiled graph, in the latent step and inside the
otherwise eager HVAE step; its compile time (first call) is reported beside it. ``--device cuda`` runs everything
on a GPU (blocks are timed between ``torch.cuda.synchronize()`` calls). The load average is recorded before and
after; above 1 before (or 2 after, counting the run itself) the run warns that its times are not idle-machine
figures.
``--svae PATH`` imports the reference implementation of Davidson et al. (2018) from a local checkout of
s-vae-pytorch (``PATH/hyperspherical_vae``); nothing of it is copied here.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence

from common.cli import ArgumentParser, UserError, run_cli, set_threads
from common.markdown import write_section
from vmfprior import HypersphericalUniform, VonMisesFisher

# Targets of issue 10, as ratios within one run.
TARGET_VS_POWER_SPHERICAL = 1.0  # latent step, batch <= 1024
TARGET_VS_SVAE = 0.5  # latent step, every batch
TARGET_HVAE_VS_GAUSSIAN = 1.25  # whole HVAE step, batch 64
POWER_SPHERICAL_TARGET_MAX_BATCH = 1024
HVAE_TARGET_BATCH = 64


class _Peer:
    """One latent family: how to build it from raw encoder outputs, and its KL to its prior."""

    def __init__(self, name: str, concentration_width, build):
        self.name = name
        self.concentration_width = concentration_width  # columns of the raw concentration output, given d
        self.build = build  # (raw_loc (B, d), raw_concentration (B, k)) -> (z (B, d), kl (B,))


def _gaussian(raw_loc, raw_scale):
    posterior = Normal(raw_loc, F.softplus(raw_scale) + 1e-3)
    prior = Normal(torch.zeros_like(raw_loc), torch.ones_like(raw_loc))
    return posterior.rsample(), kl_divergence(posterior, prior).sum(-1)


def _vmfprior(raw_loc, raw_concentration):
    posterior = VonMisesFisher(F.normalize(raw_loc, dim=-1), F.softplus(raw_concentration.squeeze(-1)) + 1.0)
    prior = HypersphericalUniform(raw_loc.shape[-1], dtype=raw_loc.dtype, device=raw_loc.device)
    return posterior.rsample(), kl_divergence(posterior, prior)


def _peers(svae_path: str | None) -> list[_Peer]:
    peers = [_Peer("gaussian", lambda d: d, _gaussian)]
    if svae_path is not None:
        sys.path.insert(0, str(Path(svae_path).resolve()))
        from hyperspherical_vae.distributions import HypersphericalUniform as SvaeUniform
        from hyperspherical_vae.distributions import VonMisesFisher as SvaeVonMisesFisher

        def svae(raw_loc, raw_concentration):
            posterior = SvaeVonMisesFisher(F.normalize(raw_loc, dim=-1), F.softplus(raw_concentration) + 1.0)
            prior = SvaeUniform(raw_loc.shape[-1] - 1, device=raw_loc.device)  # its dim is the sphere's, d - 1
            return posterior.rsample(), kl_divergence(posterior, prior)

        peers.append(_Peer("s-vae", lambda d: 1, svae))
    try:
        import power_spherical
    except ImportError:
        print("power_spherical is not installed (pip install power-spherical): its column is left out")
    else:

        def power(raw_loc, raw_concentration):
            posterior = power_spherical.PowerSpherical(
                F.normalize(raw_loc, dim=-1), F.softplus(raw_concentration.squeeze(-1)) + 1.0
            )
            prior = power_spherical.HypersphericalUniform(raw_loc.shape[-1], device=raw_loc.device, dtype=raw_loc.dtype)
            return posterior.rsample(), kl_divergence(posterior, prior)

        peers.append(_Peer("power_spherical", lambda d: 1, power))
    peers.append(_Peer("vmfprior", lambda d: 1, _vmfprior))
    return peers


def _compiled_vmfprior_peer() -> _Peer:
    """vmfprior with the latent compiled as one graph (validation off: its checks would synchronise)."""

    def build(raw_loc, raw_concentration):
        posterior = VonMisesFisher(
            F.normalize(raw_loc, dim=-1), F.softplus(raw_concentration.squeeze(-1)) + 1.0, validate_args=False
        )
        prior = HypersphericalUniform(raw_loc.shape[-1], dtype=raw_loc.dtype, device=raw_loc.device)
        return posterior.rsample(), kl_divergence(posterior, prior)

    # Dynamo caches by code object: every (batch, d) would add a recompilation of this one `build` until its limit
    # (8) stops the ninth setting. Each setting compiles once anyway, so start each from an empty cache.
    torch._dynamo.reset()
    return _Peer("vmfprior compiled", lambda d: 1, torch.compile(build, fullgraph=True, dynamic=False))


def _on_device(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor drawn on the CPU (seeded generator) moved to the default device."""
    return tensor.to(torch.get_default_device())


def _latent_step(peer: _Peer, batch: int, dim: int, seed: int):
    """A closure running one latent step of ``peer`` on fresh leaves holding fixed encoder outputs."""
    generator = torch.Generator().manual_seed(seed)
    loc_values = _on_device(torch.randn(batch, dim, generator=generator, device="cpu"))
    concentration_values = _on_device(
        torch.randn(batch, peer.concentration_width(dim), generator=generator, device="cpu") * 2.0 + 3.0
    )
    weights = _on_device(torch.randn(batch, dim, generator=generator, device="cpu"))

    def step():
        raw_loc = loc_values.detach().requires_grad_()  # new leaves: nothing carries over between steps
        raw_concentration = concentration_values.detach().requires_grad_()
        z, kl = peer.build(raw_loc, raw_concentration)
        ((z * weights).sum() + kl.sum()).backward()

    return step


class _HVAE(torch.nn.Module):
    """784-256-128 MLP encoder, a latent of ``dim`` coordinates, 128-256-784 decoder (Bernoulli logits)."""

    def __init__(self, dim: int, peer: _Peer):
        super().__init__()
        self.peer = peer
        self.encoder = torch.nn.Sequential(
            torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128), torch.nn.ReLU()
        )
        self.loc_head = torch.nn.Linear(128, dim)
        self.concentration_head = torch.nn.Linear(128, peer.concentration_width(dim))
        self.decoder = torch.nn.Sequential(
            torch.nn.Linear(dim, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 256),
            torch.nn.ReLU(),
            torch.nn.Linear(256, 784),
        )

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(images)  # (B, 128)
        z, kl = self.peer.build(self.loc_head(hidden), self.concentration_head(hidden))  # (B, d), (B,)
        reconstruction = F.binary_cross_entropy_with_logits(self.decoder(z), images, reduction="none").sum(-1)
        return (reconstruction + kl).mean()


def _hvae_step(peer: _Peer, batch: int, dim: int, seed: int):
    """A closure running one Adam step of the small VAE with ``peer``'s latent on a fixed random binary batch."""
    torch.manual_seed(seed)
    model = _HVAE(dim, peer)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images = _on_device(
        (torch.rand(batch, 784, generator=torch.Generator().manual_seed(seed), device="cpu") < 0.3).float()
    )

    def step():
        optimizer.zero_grad(set_to_none=True)
        model.loss(images).backward()
        optimizer.step()

    return step


def _count_operations(step, seed: int = 0) -> int:
    """How many tensor operations (ATen calls, forward and backward) one call of ``step`` runs.

    The counted call draws from torch's generator seeded with ``seed`` (restored afterwards): a rejection sampler's
    extra rounds add operations, so the count is reproducible only for a fixed random stream.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Counter.count += 1
            return func(*args, **(kwargs or {}))

    step()  # first-call work (caches) is not what a training loop repeats
    with torch.random.fork_rng(devices=[]), Counter():
        torch.manual_seed(seed)
        step()
    return Counter.count


def _synchronize() -> None:
    """Wait for the GPU's queued work (a no-op on a CPU), so that a block's time includes all of it."""
    if torch.get_default_device().type == "cuda":
        torch.cuda.synchronize()


def _interleaved_medians(steps: dict, repeats: int, block_seconds: float, first_call: dict | None = None) -> dict:
    """Median over ``repeats`` of each step's mean time (seconds) in a block of calls, the steps taken in turn.

    ``first_call``, if given, receives the time of each step's first call (a compiled step's compile time).
    """
    per_block = {}
    for name, step in steps.items():  # warm-up, and the block length that makes a block last ~block_seconds
        _synchronize()
        start = time.perf_counter()
        step()
        _synchronize()
        if first_call is not None:
            first_call[name] = time.perf_counter() - start
        step()
        _synchronize()
        start = time.perf_counter()
        step()
        _synchronize()
        per_block[name] = max(1, round(block_seconds / max(time.perf_counter() - start, 1e-6)))
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            _synchronize()
            start = time.perf_counter()
            for _ in range(per_block[name]):
                step()
            _synchronize()
            times[name].append((time.perf_counter() - start) / per_block[name])
    return {name: statistics.median(values) for name, values in times.items()}


def _repeats_for(batch: int, repeats: int) -> int:
    """Fewer repeats where one call takes long (batch 65,536), at least 5."""
    return max(5, repeats // max(1, batch // 4096))


# Above this 1-minute load average another process competes for this 2-core machine's CPU: not an idle run.
IDLE_LOAD_AVERAGE = 1.0


def _load_average() -> float | None:
    """The 1-minute load average of this machine (CPU processes waiting or running), or None where unknown."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _load_text(load: float | None) -> str:
    return "?" if load is None else f"{load:.2f}"


def _busy_warning(before: float | None, after: float | None) -> str | None:
    """A warning when another process shared the CPU: load average above IDLE_LOAD_AVERAGE before the run, or
    above IDLE_LOAD_AVERAGE + 1 after it (the run itself, one busy thread for minutes, adds about 1)."""
    busy_before = before is not None and before > IDLE_LOAD_AVERAGE
    busy_after = after is not None and after > IDLE_LOAD_AVERAGE + 1
    if not (busy_before or busy_after):
        return None
    return (
        f"warning: load average {_load_text(before)} before and {_load_text(after)} after the run (idle: <= "
        f"{IDLE_LOAD_AVERAGE:g} before, <= {IDLE_LOAD_AVERAGE + 1:g} after, counting this run, on a "
        f"{os.cpu_count()}-core machine): other processes shared the CPU, so these are not idle-machine figures; "
        "compare the ratios within the run only"
    )


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds < 1.0 else f"{seconds * 1e3:,.0f} ms"


def _verdict(ratio: float, target: float) -> str:
    return (
        f"met ({ratio:.2f}x <= {target:g}x)"
        if ratio <= target
        else f"**not met** ({ratio:.2f}x > {target:g}x, by {ratio / target - 1:.0%})"
    )


COMPILED = "vmfprior compiled"


def _latent_table(
    results: list[tuple[int, int, dict]], names: list[str], compile_seconds: dict | None = None
) -> tuple[str, list[str]]:
    compiled = COMPILED in names
    header = (
        "| batch | d | "
        + " | ".join(names)
        + " | vmfprior / power_spherical | vmfprior / s-vae"
        + (" | compiled / power_spherical | compile time (first call)" if compiled else "")
        + " | targets |"
    )
    lines = [header, "|---:|---:|" + "---:|" * len(names) + "---:|---:|" + ("---:|---:|" if compiled else "") + "---|"]
    misses = []
    for batch, dim, seconds in results:
        cells = [_milliseconds(seconds[name]) for name in names]
        verdicts, ratio_cells = [], []
        for peer, target, applies in (
            ("power_spherical", TARGET_VS_POWER_SPHERICAL, batch <= POWER_SPHERICAL_TARGET_MAX_BATCH),
            ("s-vae", TARGET_VS_SVAE, True),
        ):
            if peer not in seconds:
                ratio_cells.append("-")
                continue
            ratio = seconds["vmfprior"] / seconds[peer]
            ratio_cells.append(f"{ratio:.2f}x")
            if applies:
                verdict = _verdict(ratio, target)
                verdicts.append(f"vs {peer}: {verdict}")
                if ratio > target:
                    misses.append(f"batch {batch:,}, d = {dim} vs {peer}: {ratio:.2f}x")
        if compiled:
            ratio_cells.append(
                f"{seconds[COMPILED] / seconds['power_spherical']:.2f}x" if "power_spherical" in seconds else "-"
            )
            ratio_cells.append(f"{compile_seconds[(batch, dim)]:.1f} s" if compile_seconds else "-")
        lines.append(
            f"| {batch:,} | {dim} | "
            + " | ".join(cells)
            + " | "
            + " | ".join(ratio_cells)
            + " | "
            + ("; ".join(verdicts) or "-")
            + " |"
        )
    return "\n".join(lines), misses


def _hvae_table(
    results: list[tuple[int, int, dict]], names: list[str], compile_seconds: dict | None = None
) -> tuple[str, list[str]]:
    compiled = bool(compile_seconds)
    lines = [
        "| batch | d | "
        + " | ".join(names)
        + " | "
        + " | ".join(f"{n} / gaussian" for n in names[1:])
        + (" | compile time (first call)" if compiled else "")
        + " | target |",
        "|---:|---:|" + "---:|" * (2 * len(names) - 1) + ("---:|" if compiled else "") + "---|",
    ]
    misses = []
    for batch, dim, seconds in results:
        ratio = seconds["vmfprior"] / seconds["gaussian"]
        verdict = "-"
        if batch == HVAE_TARGET_BATCH:
            verdict = "vmfprior / gaussian: " + _verdict(ratio, TARGET_HVAE_VS_GAUSSIAN)
            if ratio > TARGET_HVAE_VS_GAUSSIAN:
                misses.append(f"HVAE step, batch {batch}: {ratio:.2f}x")
        lines.append(
            f"| {batch:,} | {dim} | "
            + " | ".join(_milliseconds(seconds[n]) for n in names)
            + " | "
            + " | ".join(f"{seconds[n] / seconds['gaussian']:.2f}x" for n in names[1:])
            + (f" | {compile_seconds[batch]:.1f} s" if compile_seconds else "")
            + f" | {verdict} |"
        )
    return "\n".join(lines), misses


GPU_NOTE = """\
GPU use: in eager mode the sampler has one host synchronisation per round of Wood's rejection sampler (the count
of entries still rejected decides whether another round runs; at batch 64 a round draws 4 proposals per entry and
almost always ends the loop), and one more where validation is on (`validate_args`, the torch default: one read
of the extremes of both parameters). The Bessel terms, the KL and the implicit gradient have none. The compiled step
(validation off) has none at all: its sampler runs fixed-shape rounds and decides further rounds inside the graph
(`while_loop`). On a machine with a GPU the same tables come from `python -m benchmarks.vmf_latent --device cuda`
(add `--write FILE` to record them); `nsys profile` around it shows the synchronisations."""


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="python -m benchmarks.vmf_latent",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 1024, 65536])
    parser.add_argument("--dims", type=int, nargs="+", default=[5, 10, 64])
    parser.add_argument("--hvae-batches", type=int, nargs="*", default=[64, 256])
    parser.add_argument("--hvae-dim", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=21, help="interleaved repeats per setting (median kept)")
    parser.add_argument("--block-seconds", type=float, default=0.02, help="length of one timed block of calls")
    parser.add_argument("--svae", default=None, help="path to a local checkout of s-vae-pytorch (adds its column)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (a GPU: eager and compiled steps on it)")
    parser.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="leave out the compiled vmfprior column (each batch and d compiles once, ~1 min on a CPU)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--write", default=None, help="markdown file whose vmf-latent section is replaced")
    args = parser.parse_args(argv)
    if min(args.batches) < 1 or min(args.dims) < 2 or args.repeats < 1 or args.block_seconds <= 0:
        raise UserError("--batches must be >= 1, --dims >= 2, --repeats >= 1 and --block-seconds > 0")
    if args.svae is not None and not Path(args.svae, "hyperspherical_vae").is_dir():
        raise UserError(f"--svae {args.svae!r} is not a checkout of s-vae-pytorch (no hyperspherical_vae/ inside)")
    if args.device not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to torch on this machine")
    set_threads(args.threads)
    if args.device != "cpu":
        torch.set_default_device(args.device)

    load_before = _load_average()
    warning = _busy_warning(load_before, None)
    if warning:
        print(warning, flush=True)
    peers = _peers(args.svae)
    names = [peer.name for peer in peers]
    if args.compile:
        names.append(COMPILED)
    latent_results, compile_seconds = [], {}
    for batch in args.batches:
        for dim in args.dims:
            setting_peers = peers + ([_compiled_vmfprior_peer()] if args.compile else [])
            steps = {peer.name: _latent_step(peer, batch, dim, seed=batch + dim) for peer in setting_peers}
            first_call = {}
            seconds = _interleaved_medians(steps, _repeats_for(batch, args.repeats), args.block_seconds, first_call)
            if args.compile:
                compile_seconds[(batch, dim)] = first_call[COMPILED]
            latent_results.append((batch, dim, seconds))
            print(
                f"latent batch={batch:6d} d={dim:3d}: "
                + "  ".join(f"{name} {_milliseconds(value)}" for name, value in seconds.items()),
                flush=True,
            )
    hvae_results, hvae_compile_seconds = [], {}
    for batch in args.hvae_batches:
        # The compiled column compiles the latent (build, rsample, KL) inside an otherwise eager training step.
        hvae_peers = peers + ([_compiled_vmfprior_peer()] if args.compile else [])
        steps = {peer.name: _hvae_step(peer, batch, args.hvae_dim, seed=batch) for peer in hvae_peers}
        first_call = {}
        seconds = _interleaved_medians(steps, args.repeats, args.block_seconds, first_call)
        if args.compile:
            hvae_compile_seconds[batch] = first_call[COMPILED]
        hvae_results.append((batch, args.hvae_dim, seconds))
        print(
            f"HVAE   batch={batch:6d} d={args.hvae_dim:3d}: "
            + "  ".join(f"{name} {_milliseconds(value)}" for name, value in seconds.items()),
            flush=True,
        )

    latent_table, misses = _latent_table(latent_results, names, compile_seconds)
    operations = {peer.name: _count_operations(_latent_step(peer, 64, 10, seed=0)) for peer in peers}
    notes = [
        "Tensor operations in one latent step (batch 64, d = 10, forward and backward, counted in this run): "
        + ", ".join(f"{name} {count}" for name, count in operations.items())
        + ". At small batches each costs a few microseconds of dispatch whatever its size, so this count, not "
        "the arithmetic, sets the latent step's time there."
    ]
    for batch, dim, seconds in latent_results:
        floor = seconds["gaussian"] / seconds["s-vae"] if "s-vae" in seconds else 0.0
        if (
            floor > TARGET_VS_SVAE
            and seconds["vmfprior"] > TARGET_VS_SVAE * seconds["s-vae"]
            and seconds["vmfprior"] >= seconds["gaussian"]
        ):
            notes.append(
                f"At batch {batch:,}, d = {dim} the Gaussian floor alone takes {floor:.2f}x s-vae's time, so no "
                f"spherical latent can reach {TARGET_VS_SVAE}x s-vae there: the work per coordinate (d normals per "
                "sample, the reflection and its backward) that every sampler pays dominates, and s-vae's per-sample "
                "overheads are small beside it."
            )
    hvae_table, hvae_misses = _hvae_table(hvae_results, names, hvae_compile_seconds) if hvae_results else ("", [])
    misses += hvae_misses
    load_after = _load_average()
    warning = _busy_warning(load_before, load_after)
    if warning:
        notes.insert(0, warning)
    summary = "All targets checked in this run are met." if not misses else "Targets missed: " + "; ".join(misses) + "."
    print()
    print(latent_table)
    print()
    print(hvae_table)
    print()
    print(summary)
    print("\n".join(notes))
    if warning:
        print(warning, file=sys.stderr)
    if args.write:
        arguments = list(sys.argv[1:] if argv is None else argv)
        if args.svae:  # the reader's checkout is elsewhere: name it as a placeholder, never this machine's path
            arguments = ["PATH/TO/s-vae-pytorch" if part == args.svae else part for part in arguments]
        command = "python -m " + " ".join(shlex.quote(part) for part in ["benchmarks.vmf_latent", *arguments])
        body = "\n".join(
            [
                f"Command: `{command}`",
                "",
                f"Machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), "
                f"device {args.device}, float32, load average {_load_text(load_before)} before and "
                f"{_load_text(load_after)} after the run. Each figure is the median over repeats of one call's time "
                "(a block of calls divided by its length), the peers timed in turn within each repeat. Latent step: "
                "fresh encoder "
                "outputs requiring grad, the distribution built from them (unit loc, concentration softplus + 1), "
                "rsample, KL to the uniform prior (Gaussian: Normal and KL to N(0, I)), backward. HVAE step: one Adam "
                "step of a 784-256-128 / 128-256-784 MLP VAE with a Bernoulli likelihood. Targets: vmfprior <= "
                f"power_spherical at batch <= {POWER_SPHERICAL_TARGET_MAX_BATCH:,}, <= {TARGET_VS_SVAE}x s-vae at "
                f"every batch, HVAE step <= {TARGET_HVAE_VS_GAUSSIAN}x Gaussian at batch {HVAE_TARGET_BATCH}.",
                "",
                "Latent step (forward + backward):",
                "",
                latent_table,
                "",
                *(["Whole HVAE training step:", "", hvae_table, ""] if hvae_results else []),
                summary,
                "",
                *[line for note in notes for line in (note, "")],
                GPU_NOTE,
            ]
        )
        write_section(args.write, "vmf-latent", "## The vMF latent step, as a VAE runs it\n\n" + body)
        print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
