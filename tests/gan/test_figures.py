"""gan.figures: the per-class samples and the class-to-class interpolations of a run, as labelled figures."""

from PIL import Image

from gan.figures import main as figures
from gan.train import main as train
from tests.gan.helpers import tiny_args


def test_figures_of_a_run_are_labelled_and_named_by_seed(fake_cifar, tmp_path, single_thread):
    run = tmp_path / "run"
    train(tiny_args(fake_cifar, run, "--iterations", "1", "--sampler", "sphere", "--sample-every", "100"))
    paths = figures(["--run", str(run), "--per-class", "2", "--steps", "3", "--seed", "5", "--cpu"])
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["samples-seed5.png", "interpolations-seed5.png"]
    for path, columns in zip(paths, (2, 3)):
        width, height = Image.open(path).size
        bare_width, bare_height = columns * 34 + 2, 10 * 34 + 2  # torchvision's grid of 32-pixel images
        assert width > 3 * bare_width and height > 3 * bare_height  # enlarged, with title, row labels, caption
