"""vae.figures and eval.grids' labelled grids: titles, row labels, readable sizes, integer epoch ticks."""

import json

import pytest
import torch
from PIL import Image

from eval.grids import save_image_grid
from vae import figures as figures_module


def _png_size(path):
    with Image.open(path) as image:
        return image.size


def test_bare_grid_is_unchanged_and_labelled_grid_is_scaled(tmp_path):
    images = torch.rand(20, 1, 28, 28)
    save_image_grid(images, tmp_path / "bare.png", nrow=10)
    assert _png_size(tmp_path / "bare.png") == (302, 62)  # 10 images of 28 px and 11 gaps of 2 px
    save_image_grid(
        images,
        tmp_path / "labelled.png",
        nrow=10,
        title="t",
        caption="c",
        row_labels=["a", "b"],
        xlabel="x",
        ylabel="y",
        scale=3,
    )
    width, height = _png_size(tmp_path / "labelled.png")
    assert width >= 3 * 302 and height >= 3 * 62  # the grid at 3x plus margins for the text
    assert width < 3 * 302 + 300 and height < 3 * 62 + 200


def test_row_labels_must_match_the_rows(tmp_path):
    with pytest.raises(ValueError, match=r"one label per row \(2\), got 3"):
        save_image_grid(torch.rand(20, 1, 28, 28), tmp_path / "x.png", nrow=10, row_labels=["a", "b", "c"])


def test_learning_curve_has_integer_epoch_ticks_title_and_labels(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    records = [
        {"epoch": epoch, "train_elbo_kl_weight_1": -200.0 + epoch, "validation_elbo": -199.0 + epoch}
        for epoch in (1, 2, 3)
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    kept = []
    monkeypatch.setattr(plt, "close", lambda figure: kept.append(figure))
    assert figures_module.learning_curve(tmp_path, tmp_path / "curve.png") == tmp_path / "curve.png"
    axis = kept[0].axes[0]
    ticks = [tick for tick in axis.get_xticks() if axis.get_xlim()[0] <= tick <= axis.get_xlim()[1]]
    assert ticks and all(float(tick).is_integer() for tick in ticks)
    assert axis.get_xlabel() == "epoch" and "nats" in axis.get_ylabel() and axis.get_title()
    assert any("validation split" in text.get_text() for text in kept[0].texts)  # the caption


def test_run_figures_say_how_to_read_them(tmp_path, tiny_data, monkeypatch):
    """Every grid of a trained run is a labelled figure with the model's name and the right row labels."""
    from vae.train import TrainConfig, train

    config = TrainConfig(
        model="hvae-c",
        latent_dim=3,
        epochs=1,
        num_validation=60,
        batch_size=64,
        progress=False,
        figures=False,
        cpu=True,
        out=str(tmp_path / "run"),
    )
    train(config, data=tiny_data, log=lambda *_: None)
    calls = {}
    original = figures_module.save_image_grid

    def record(images, path, nrow, **labels):
        calls[str(path).rsplit("/", 1)[-1]] = (images.shape, labels)
        return original(images, path, nrow, **labels)

    monkeypatch.setattr(figures_module, "save_image_grid", record)
    import eval.grids

    monkeypatch.setattr(eval.grids, "save_image_grid", record)
    written = figures_module.make_run_figures(tmp_path / "run", data=tiny_data)
    assert [p.name for p in written] == [
        "reconstructions.png",
        "samples.png",
        "interpolations.png",
        "learning_curve.png",
    ]
    shape, labels = calls["reconstructions.png"]
    assert shape[0] == 100 and labels["row_labels"][:2] == ["input 1-10", "output"]
    assert "alternate" in labels["ylabel"] and "HVAE-C, d = 3" in labels["title"]
    shape, labels = calls["samples.png"]
    assert labels["row_labels"] == [f"class {c}" for c in range(10)] and labels["caption"]
    shape, labels = calls["interpolations.png"]
    assert labels["row_labels"] == [f"{a} \u2192 {b}" for a, b in figures_module.INTERPOLATION_PAIRS]
    assert "great circle" in labels["caption"]
    for name in ("reconstructions.png", "samples.png", "interpolations.png"):
        assert _png_size(tmp_path / "run" / name)[0] >= 900  # readable: the 302-px grid at 3x


# ------------------------------------------------------------------------------------------------------------
# The Table-4 plot (vae.plots, drawn by vae.report --plot)
# ------------------------------------------------------------------------------------------------------------


def _results(values):
    """A results dict with log p(x) values {(name, d, head): [per-seed values]}."""
    runs = []
    for (name, d, head), per_seed in values.items():
        for seed, value in enumerate(per_seed):
            runs.append(
                {
                    "name": name,
                    "model": name.replace("-enc", ""),
                    "latent_dim": d,
                    "seed": seed,
                    "head": head,
                    "log_px": value,
                    "num_samples": 500,
                    "num_examples": 10000,
                }
            )
    return {"command": "x", "config": {"latent_dims": sorted({d for _, d, _ in values})}, "runs": runs}


VALUES = {
    ("hvae", 5, None): [-115.0, -114.0, -113.5],
    ("hvae-l", 5, "linear"): [-114.2, -113.1, -113.6],
    ("hvae-c", 5, None): [-116.0],
    ("hvae-l", 10, "linear"): [-96.0, -97.0],
    ("hvae", 10, None): [-97.5, -97.1],
    ("hvae-l-random", 5, "random"): [-130.0],
    ("hvae-l-enc", 5, "linear"): [-100.0, -101.0],
}


def test_table4_points_are_mean_sd_n_of_the_three_models_only():
    import numpy as np

    from vae.plots import table4_points

    points = table4_points(_results(VALUES))
    assert set(points) == {"hvae", "hvae-c", "hvae-l"} and set(points["hvae-l"]) == {5, 10}
    for (name, d, _), values in VALUES.items():
        if name in points:
            mean, sd, n = points[name][d]
            assert mean == pytest.approx(np.mean(values)) and n == len(values)
            if n > 1:
                assert sd == pytest.approx(np.std(values, ddof=1))


def test_table4_plot_draws_sd_bars_and_se_of_differences(tmp_path, monkeypatch):
    import math

    import matplotlib.pyplot as plt
    import numpy as np

    from vae.plots import plot_table4

    kept = []
    monkeypatch.setattr(plt, "close", lambda figure: kept.append(figure))
    assert plot_table4(_results(VALUES), tmp_path / "t4.png").stat().st_size > 10_000
    left, right = kept[0].axes
    assert "log p(x)" in left.get_ylabel() and "latent dimension d" in left.get_xlabel() and left.get_title()
    bars = {container.get_label(): container for container in left.containers}
    hvae = bars["HVAE, this reproduction (mean ± sd)"]
    np.testing.assert_allclose(
        np.asarray(hvae.lines[0].get_ydata(), dtype=float), [np.mean(VALUES[("hvae", 5, None)]), -97.3]
    )
    half_lengths = [abs(segment[1, 1] - segment[0, 1]) / 2 for segment in hvae.lines[2][0].get_segments()]
    np.testing.assert_allclose(
        half_lengths, [np.std(VALUES[("hvae", 5, None)], ddof=1), np.std(VALUES[("hvae", 10, None)], ddof=1)]
    )
    # Right panel: HVAE-L − HVAE at d = 5 and 10 with SE = sqrt(sd_a^2/n_a + sd_b^2/n_b); HVAE-C (1 seed) not drawn.
    differences = {container.get_label(): container for container in right.containers}
    assert list(differences) == ["HVAE-L − HVAE, this reproduction (± SE)"]
    line = differences["HVAE-L − HVAE, this reproduction (± SE)"]
    a, b = VALUES[("hvae-l", 10, "linear")], VALUES[("hvae", 10, None)]
    assert line.lines[0].get_ydata()[1] == pytest.approx(np.mean(a) - np.mean(b))
    se = math.sqrt(np.var(a, ddof=1) / 2 + np.var(b, ddof=1) / 2)
    segment = line.lines[2][0].get_segments()[1]
    assert abs(segment[1, 1] - segment[0, 1]) / 2 == pytest.approx(se)
    assert any("Hollow squares" in text.get_text() for text in kept[0].texts)


def test_report_plot_option_writes_the_png_and_refuses_empty_results(tmp_path, capsys):
    from common.cli import run_cli
    from vae.report import main as report_main

    path = tmp_path / "r.json"
    path.write_text(json.dumps(_results(VALUES) | {"config": {"latent_dims": [5, 10], "seeds": [0, 1, 2]}}))
    report_main([str(path), "--plot", str(tmp_path / "plot.png")])
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    path.write_text(
        json.dumps(_results({("hvae-l-enc", 5, "linear"): [-1.0]}) | {"config": {"latent_dims": [5], "seeds": [0]}})
    )
    capsys.readouterr()
    assert run_cli(report_main, [str(path), "--plot", str(tmp_path / "none.png")]) == 2
    assert "no log p(x) of HVAE, HVAE-C or HVAE-L" in capsys.readouterr().err
