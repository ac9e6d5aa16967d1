"""vae.report's run page: a heading and figures, "one seed" for one seed, reused units instead of a total time."""

from vae.report import format_results, format_run_page


def _results(seeds, **extra):
    runs = [
        {
            "name": "hvae",
            "model": "hvae",
            "latent_dim": 3,
            "seed": seed,
            "head": None,
            "log_px": -130.0 - seed,
            "log_pxy": None,
            "log_px_given_y": None,
            "elbo": -135.0,
            "epochs": 2,
            "num_examples": 100,
            "num_samples": 10,
        }
        for seed in seeds
    ]
    return {
        "command": "python -m vae.experiment --quick",
        "runs": runs,
        "seconds": 9.0,
        "config": {"latent_dims": [3], "quick": True, "prior_concentration": 5.0},
        **extra,
    }


def test_one_seed_says_so_and_several_say_mean_sd():
    one = format_results(_results([0]))
    assert "One seed (0): no spread." in one and "mean ± sd" not in one
    several = format_results(_results([0, 1]))
    assert "Cells: mean ± sd over seeds" in several and "seeds [0, 1]" in several and "-130.5 ± 0.7 (2)" in several


def test_reused_units_replace_the_total_time():
    assert "(total 9 s)" in format_results(_results([0]))
    everything = format_results(_results([0, 1], reused=["hvae d=3 seed 0", "hvae d=3 seed 1"]))
    assert "every unit reused from an earlier pass" in everything and "total" not in everything
    part = format_results(_results([0, 1], reused=["hvae d=3 seed 0"]))
    assert "(1 of 2 units reused; total 9 s)" in part


def test_run_page_has_a_heading_and_lists_its_figures():
    page = format_run_page(
        _results([0]), ["seed0/d3/hvae/samples.png", "seed0/d3/hvae/learning_curve.png", "seed0/d5/hvae/samples.png"]
    )
    assert page.startswith("# Quick run: hyperspherical VAEs on MNIST (Table 4), d = [3]\n")
    assert (
        "- `seed0/d3/hvae`: [samples](seed0/d3/hvae/samples.png) · "
        "[learning_curve](seed0/d3/hvae/learning_curve.png)\n- `seed0/d5/hvae`: [samples](seed0/d5/hvae/samples.png)\n"
        in page
    )
    assert page.endswith(format_results(_results([0])))
