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
    save_image_grid(images, tmp_path / "labelled.png", nrow=10, title="t", caption="c", row_labels=["a", "b"],
                    xlabel="x", ylabel="y", scale=3)
    width, height = _png_size(tmp_path / "labelled.png")
    assert width >= 3 * 302 and height >= 3 * 62  # the grid at 3x plus margins for the text
    assert width < 3 * 302 + 300 and height < 3 * 62 + 200


def test_row_labels_must_match_the_rows(tmp_path):
    with pytest.raises(ValueError, match=r"one label per row \(2\), got 3"):
        save_image_grid(torch.rand(20, 1, 28, 28), tmp_path / "x.png", nrow=10, row_labels=["a", "b", "c"])


def test_learning_curve_has_integer_epoch_ticks_title_and_labels(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    records = [{"epoch": epoch, "train_elbo_kl_weight_1": -200.0 + epoch, "validation_elbo": -199.0 + epoch}
               for epoch in (1, 2, 3)]
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

    config = TrainConfig(model="hvae-c", latent_dim=3, max_epochs=1, num_validation=60, batch_size=64,
                         progress=False, figures=False, cpu=True, out=str(tmp_path / "run"))
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
    assert [p.name for p in written] == ["reconstructions.png", "samples.png", "interpolations.png",
                                         "learning_curve.png"]
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
