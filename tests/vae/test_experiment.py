"""Tests for vae.experiment: settings, the results tables, and one tiny end-to-end run."""

import json

import pytest

from vae import experiment
from vae.experiment import QUICK, ExperimentConfig, effective_config, run_experiment
from vae.report import format_results, merge_results
from vae.report import main as report_main


def test_quick_overrides_and_defaults():
    config = effective_config(ExperimentConfig(quick=True, latent_dims=(5, 10)))
    for key, value in QUICK.items():
        assert getattr(config, key) == value
    assert config.ablation_latent_dims == (5,) and config.out == "runs/table4-quick"
    full = effective_config(ExperimentConfig(latent_dims=(5, 10)))
    assert full.ablation_latent_dims == (5, 10) and full.out == "runs/table4" and full.epochs == 100


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"latent_dims": (1,)}, "--latent-dims"),
        ({"latent_dims": ()}, "--latent-dims"),
        ({"num_samples": 0}, "--num-samples"),
        ({"latent_dims": (3,), "ablation_latent_dims": (5,)}, "--ablation-latent-dims"),
        ({"models": ("hvae", "vae")}, "--models"),
        ({"seeds": (1, 1)}, "--seeds"),
        ({"latent_dims": (3,), "encoder_ablation_dims": (5,)}, "--encoder-ablation-dims"),
        ({"latent_dims": (3,), "encoder_ablation_only": True}, "--encoder-ablation-only"),
        (
            {"latent_dims": (3, 5), "encoder_ablation_dims": (3,), "encoder_ablation_only": True},
            "--encoder-ablation-only",
        ),
        (
            {"latent_dims": (3,), "encoder_ablation_dims": (3,), "encoder_ablation_only": True, "models": ("hvae",)},
            "--encoder-ablation-only",
        ),
    ],
)
def test_bad_settings(overrides, message):
    with pytest.raises(ValueError, match=message):
        effective_config(ExperimentConfig(**overrides))


def _run(name, model, latent_dim, head, log_px, log_pxy=None, seed=0):
    return {
        "name": name,
        "model": model,
        "latent_dim": latent_dim,
        "head": head,
        "run_dir": "x",
        "epochs": 3,
        "best_epoch": 2,
        "seed": seed,
        "log_px_given_y": None if log_pxy is None else log_pxy + 2.3,
        "stopped": "epochs",
        "best_validation_elbo": -100.0,
        "classifier_test_accuracy": 0.9 if head else None,
        "log_px": log_px,
        "log_pxy": log_pxy,
        "elbo": log_px - 5,
        "num_examples": 10,
        "num_samples": 7,
    }


def test_format_results_puts_each_number_in_its_cell():
    runs = [
        _run("hvae", "hvae", 3, None, -130.04),
        _run("hvae-c", "hvae-c", 3, None, -131.0, -133.3),
        _run("hvae-l", "hvae-l", 3, "linear", -128.26, -130.5),
        _run("hvae-l-random", "hvae-l", 3, "random", -140.0, -142.0),
        _run("hvae", "hvae", 5, None, -110.0),
    ]
    config = {"latent_dims": [3, 5], "quick": False, "prior_concentration": 5.0}
    text = format_results({"command": "python -m vae.experiment --latent-dims 3 5", "config": config, "runs": runs})
    assert "| HVAE | -130.0 | -110.0 |" in text
    assert "| HVAE-L | -128.3 | – |" in text
    assert "| HVAE-C | -133.3 | – |" in text  # the log p(x, y) table
    assert "| 3 | random | 0 | 0.9000 | -140.0 | -142.0 | -145.0 |" in text
    assert "K = 7" in text and "10 MNIST test images" in text
    assert "python -m vae.experiment --latent-dims 3 5" in text
    assert "-135.0 / -139.4 / -133.0" in text  # the paper's row at d = 3


def test_tiny_end_to_end_run_and_rerun_reuses_it(tmp_path, tiny_npz):
    config = ExperimentConfig(
        latent_dims=(3,),
        data=str(tiny_npz),
        out=str(tmp_path / "exp"),
        epochs=1,
        classifier_epochs=1,
        ablation_heads=("random",),
        num_validation=60,
        num_samples=3,
        num_test=20,
        figures=False,
        seeds=(0, 1),
        encoder_ablation_dims=(3,),
        results_md=str(tmp_path / "RESULTS.md"),
    )
    results = run_experiment(config, command="test", log=lambda *_: None)
    names = [(r["seed"], r["name"]) for r in results["runs"]]
    assert names == [
        (0, "hvae"),
        (0, "hvae-c"),
        (0, "hvae-l"),
        (0, "hvae-c-enc"),
        (0, "hvae-l-enc"),
        (0, "hvae-l-random"),
        (1, "hvae"),
        (1, "hvae-c"),
        (1, "hvae-l"),
        (1, "hvae-c-enc"),
        (1, "hvae-l-enc"),
    ]
    assert (tmp_path / "exp" / "seed1" / "d3" / "hvae-l-enc" / "best.pt").is_file()
    section = (tmp_path / "RESULTS.md").read_text()
    assert section.startswith("<!-- vae-table4:start -->") and "± " in section and "larger than SE?" in section
    for run in results["runs"]:
        assert run["log_px"] < 0 and run["num_examples"] == 20 and run["epochs"] == 1
        assert (run["log_pxy"] is None) == (run["model"] == "hvae")
    assert json.loads((tmp_path / "exp" / "results.json").read_text())["runs"][0]["name"] == "hvae"
    assert "**log p(x)**" in (tmp_path / "exp" / "RESULTS.md").read_text()
    assert results["reused"] == []
    lines = []
    again = run_experiment(config, command="test", log=lines.append)
    assert [r["log_px"] for r in again["runs"]] == [r["log_px"] for r in results["runs"]]
    assert len(again["reused"]) == len(again["runs"]) and "seed1/d3/hvae-l-enc" in again["reused"]
    assert not any("scoring" in line or "epoch" in line for line in lines)  # nothing trained or scored again
    page = (tmp_path / "exp" / "RESULTS.md").read_text()
    assert page.startswith("# Experiment: hyperspherical VAEs on MNIST") and "every unit reused" in page


def test_run_page_lists_the_figures_and_ablation_lines_name_their_head(tmp_path, tiny_npz):
    config = ExperimentConfig(
        latent_dims=(3,),
        data=str(tiny_npz),
        out=str(tmp_path / "exp"),
        epochs=1,
        classifier_epochs=1,
        ablation_heads=("random",),
        num_validation=60,
        num_samples=2,
        num_test=10,
        figures=True,
        seeds=(0,),
        models=("hvae-l",),
        progress=False,
    )
    lines = []
    run_experiment(config, command="test", log=lines.append)
    assert any(line.startswith("  hvae-l-random: hvae-l d=3 epoch 1") for line in lines)
    assert any(line.startswith("  drawing the figures of") for line in lines)
    page = (tmp_path / "exp" / "RESULTS.md").read_text()
    figure = "seed0/d3/hvae-l/samples.png"
    assert f"- `seed0/d3/hvae-l`: [reconstructions](seed0/d3/hvae-l/reconstructions.png) · [samples]({figure})" in page
    assert (tmp_path / "exp" / figure).is_file()
    assert "hvae-l-random/samples.png" not in page  # ablation runs draw none


@pytest.mark.parametrize(
    "only, expected",
    [
        (False, ["hvae", "hvae-c", "hvae-l", "hvae-c-enc", "hvae-l-enc", "hvae-l-random"]),
        (True, ["hvae-c-enc", "hvae-l-enc"]),
    ],
)
def test_plan_with_and_without_encoder_ablation_only(monkeypatch, only, expected):
    trained_heads = []

    def fake_classifier(config, data, seed, latent_dim, head, log):
        trained_heads.append(head)
        return {"checkpoint": f"classifier-{head}.pt", "test_accuracy": 0.9}

    monkeypatch.setattr(experiment, "_classifier", fake_classifier)
    config = effective_config(
        ExperimentConfig(
            latent_dims=(5,), encoder_ablation_dims=(5,), ablation_heads=("random",), encoder_ablation_only=only
        )
    )
    plan = experiment._plan(config, None, 0, 5, log=lambda *_: None)
    assert [run["name"] for run in plan] == expected
    assert trained_heads == (["linear"] if only else ["linear", "random"])
    assert all(run["encoder_sees_label"] == run["name"].endswith("-enc") for run in plan)


def test_mean_sd_over_seeds_and_differences_against_their_standard_error():
    runs = [_run("hvae", "hvae", 5, None, value, seed=seed) for seed, value in enumerate((-110.0, -112.0, -111.0))]
    runs += [
        _run("hvae-l", "hvae-l", 5, "linear", value, value - 3, seed=seed)
        for seed, value in enumerate((-108.0, -109.0, -108.5))
    ]
    text = format_results({"command": "c", "config": {"latent_dims": [5], "prior_concentration": 5.0}, "runs": runs})
    assert "| HVAE | -111.0 ± 1.0 (3) |" in text  # mean -111, sample sd 1
    assert "| HVAE-L | -108.5 ± 0.5 (3) |" in text
    # difference +2.5, SE = sqrt(1/3 + 0.25/3) = 0.645: more than two standard errors
    assert "| HVAE-L − HVAE | 5 | +2.50 | 0.65 | yes (> 2 SE) |" in text
    assert "| HVAE-L | -111.5 ± 0.5 (3) |" in text  # log p(x, y)
    assert text.split("**log p(x | y)**")[1].split("**ELBO**")[0].count("| HVAE-L | -109.2 ± 0.5 (3) |") == 1


def test_encoder_ablation_differences_put_the_papers_claims_to_that_reading():
    runs = []
    for seed, (c_enc, l_enc, plain) in enumerate(((-110.0, -113.0, -115.0), (-111.0, -114.0, -115.5))):
        runs += [
            _run("hvae-c-enc", "hvae-c", 5, None, c_enc, c_enc - 1, seed=seed),
            _run("hvae-l-enc", "hvae-l", 5, "linear", l_enc, l_enc - 1, seed=seed),
            _run("hvae", "hvae", 5, None, plain, seed=seed),
        ]
    text = format_results({"command": "c", "config": {"latent_dims": [5], "prior_concentration": 5.0}, "runs": runs})
    # -113.5 - (-110.5) = -3.0 and -113.5 - (-115.25) = +1.75; every sd is 0.707 (0.354 for HVAE): SE 0.707, 0.559
    assert "| HVAE-L, q(z|x,y) − HVAE-C, q(z|x,y) | 5 | -3.00 | 0.71 | yes (> 2 SE) |" in text
    assert "| HVAE-L, q(z|x,y) − HVAE | 5 | +1.75 | 0.56 | yes (> 2 SE) |" in text


def _results(runs, latent_dims, seeds, command, **config):
    return {
        "command": command,
        "seconds": 10.0,
        "runs": runs,
        "config": {
            "latent_dims": latent_dims,
            "seeds": seeds,
            "prior_concentration": 5.0,
            "max_epochs": 100,
            "patience": 10,
            "num_samples": 500,
            **config,
        },
    }


def test_merging_experiments_of_other_seeds_and_dims_gives_one_table():
    first = _results(
        [_run("hvae", "hvae", 5, None, -110.0, seed=0), _run("hvae", "hvae", 3, None, -130.0, seed=0)],
        [3, 5],
        [0],
        "cmd-a",
    )
    second = _results(
        [_run("hvae", "hvae", 5, None, -112.0, seed=1), _run("hvae", "hvae", 10, None, -95.0, seed=1)],
        [5, 10],
        [1],
        "cmd-b",
    )
    merged = merge_results([first, second])
    assert merged["config"]["latent_dims"] == [3, 5, 10] and merged["config"]["seeds"] == [0, 1]
    assert merged["seconds"] == 20.0
    text = format_results(merged)
    assert "| HVAE | -130.0 | -111.0 ± 1.4 (2) | -95.0 |" in text
    assert "Commands (total 20 s):\n\n```\ncmd-a\ncmd-b\n```" in text


@pytest.mark.parametrize("change, message", [({"patience": 3}, "patience"), ({"num_samples": 50}, "num_samples")])
def test_merging_refuses_other_protocols(change, message):
    first = _results([_run("hvae", "hvae", 5, None, -110.0, seed=0)], [5], [0], "a")
    second = _results([_run("hvae", "hvae", 5, None, -112.0, seed=1)], [5], [1], "b", **change)
    with pytest.raises(ValueError, match=message):
        merge_results([first, second])


def test_merging_refuses_a_run_twice_with_different_results():
    first = _results([_run("hvae", "hvae", 5, None, -110.0, seed=0)], [5], [0], "a")
    second = _results([_run("hvae", "hvae", 5, None, -110.5, seed=0)], [5], [0], "b")
    with pytest.raises(ValueError, match="twice with different results"):
        merge_results([first, second])


def test_merging_counts_a_reproduced_run_once():
    first = _results([_run("hvae", "hvae", 5, None, -110.0, seed=0)], [5], [0], "a")
    again = _run("hvae", "hvae", 5, None, -110.0, seed=0)
    again.update(run_dir="elsewhere/seed0/d5/hvae", seconds=99.0)
    second = _results([again, _run("hvae", "hvae", 5, None, -112.0, seed=1)], [5], [0, 1], "b")
    merged = merge_results([first, second])
    assert [(run["seed"], run["log_px"]) for run in merged["runs"]] == [(0, -110.0), (1, -112.0)]
    assert merged["repeated"] == [("hvae", 5, 0)]
    assert "Run twice with identical results, counted once: HVAE d = 5 seed 0." in format_results(merged)


def test_report_command_writes_the_merged_section(tmp_path):
    paths = []
    for seed, value in ((0, -110.0), (1, -112.0)):
        path = tmp_path / f"seed{seed}.json"
        path.write_text(
            json.dumps(_results([_run("hvae", "hvae", 5, None, value, seed=seed)], [5], [seed], f"c{seed}"))
        )
        paths.append(str(path))
    markdown = tmp_path / "RESULTS.md"
    markdown.write_text("# Results\n")
    report_main([*paths, "--results-md", str(markdown), "--section", "t4"])
    text = markdown.read_text()
    assert "<!-- t4:start -->" in text and "| HVAE | -111.0 ± 1.4 (2) |" in text


def test_long_runs_at_d11_are_set_against_davidsons_s_vae_not_the_paper():
    text = format_results(
        _results(
            [_run("hvae", "hvae", 11, None, -93.5, seed=0), _run("hvae", "hvae", 11, None, -93.1, seed=1)],
            [11],
            [0, 1],
            "long",
        )
    )
    assert "| HVAE | -93.3 ± 0.3 (2) |" in text
    assert "| Davidson et al. S-VAE | -93.16 ± 0.31 |" in text
    assert "paper HVAE" not in text and "nan" not in text


def test_a_missing_data_file_leaves_runs_exactly_as_found(tmp_path, monkeypatch):
    from common.data import DataUnavailableError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataUnavailableError, match="missing.npz"):
        experiment.main(["--quick", "--data", "missing.npz"])
    assert list(tmp_path.iterdir()) == []  # no runs/ folder
    (tmp_path / "runs" / "table4-quick").mkdir(parents=True)
    (tmp_path / "runs" / "table4-quick" / "notes.txt").write_text("mine")
    with pytest.raises(DataUnavailableError):
        experiment.main(["--quick", "--data", "missing.npz"])
    assert [p.name for p in (tmp_path / "runs" / "table4-quick").iterdir()] == ["notes.txt"]
