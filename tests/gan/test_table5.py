"""gan.table5: the commands it runs, and the mean ± sd table it writes (on hand-made run folders)."""

import argparse
import json

import pytest
import torch

from gan import table5


def _fake_run(folder, sampler, fids, iscores, periodic):
    """A finished run folder: config.json, one fidelity JSON per (num_samples, FID, IS), periodic FIDs."""
    folder.mkdir(parents=True)
    config = {"sampler": sampler, "iterations": 3000, "concentration": 25.0 if sampler == "vmf" else None}
    (folder / "config.json").write_text(
        json.dumps({"kind": "gan", "config": config, "command": f"gan/train.py --sampler {sampler}"})
    )
    for num_samples, fid, score in zip((2000, 5000), fids, iscores):
        (folder / f"fidelity-classifier-abc-n{num_samples}.json").write_text(
            json.dumps(
                {
                    "inception_score_mean": score,
                    "inception_score_std": 0.1,
                    "frechet_inception_distance": fid,
                    "num_samples": num_samples,
                    "feature_extractor": "classifier-abc",
                    "noise": sampler,
                    "reference_id": "vmfprior-cifar-train-n10000",
                    "command": f"python -m gan.fidelity --run {folder.name}",
                }
            )
        )
    (folder / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"iteration": iteration, "frechet_inception_distance": fid}) + "\n"
            for iteration, fid in periodic
        )
    )


def test_summary_is_mean_and_sample_sd_over_seeds(tmp_path):
    runs = []
    for seed, (fid, score) in enumerate([(10.0, 2.0), (12.0, 2.5), (14.0, 3.0)]):
        runs.append(tmp_path / f"vmf-s{seed}")
        _fake_run(runs[-1], "vmf", (fid, fid / 2), (score, score), [(500, 2 * fid), (1000, fid)])
    runs.append(tmp_path / "gaussian-s0")
    _fake_run(runs[-1], "gaussian", (20.0, 9.0), (1.5, 1.5), [(500, 30.0)])
    text = table5.summarize(runs)
    # FID 10, 12, 14: mean 12, sample sd 2; IS 2, 2.5, 3: mean 2.5, sd 0.5; half-FIDs at 5000 samples: 6 ± 1
    assert "| vMF | 25.0 | 3 | 3000 | 2000 | 10000 | `classifier-abc` | 2.50 ± 0.50 | 12.00 ± 2.00 |" in text
    assert "| vMF | 25.0 | 3 | 3000 | 5000 | 10000 | `classifier-abc` | 2.50 ± 0.50 | 6.00 ± 1.00 |" in text
    assert "| Gaussian | – | 1 | 3000 | 2000 | 10000 | `classifier-abc` | 1.50 | 20.00 |" in text
    # periodic FIDs: vMF at 500 is 20, 24, 28 -> 24 ± 4; the Gaussian run has no value at 1000
    assert "| Gaussian | 30.00 (n=1) | – |" in text
    assert "| vMF | 24.00 ± 4.00 (n=3) | 12.00 ± 2.00 (n=3) |" in text
    assert "gan/train.py --sampler vmf" in text and "python -m gan.fidelity --run vmf-s2" in text
    # folders kept without checkpoints report the last logged iteration as their progress
    assert "`vmf-s0` 1000" in text and "`gaussian-s0` 500" in text


def test_summary_lists_each_run_and_the_differences_between_noises(tmp_path):
    runs = []
    for sampler, fids, scores in (("gaussian", (20.0, 24.0), (2.2, 2.6)), ("vmf", (10.0, 12.0), (2.0, 3.0))):
        for seed, (fid, score) in enumerate(zip(fids, scores)):
            runs.append(tmp_path / f"{sampler}-s{seed}")
            _fake_run(runs[-1], sampler, (fid, fid), (score, score), [(500, fid)])
    text = table5.summarize(runs)
    assert "- vMF: `vmf-s0` 2.00 / 10.00, `vmf-s1` 3.00 / 12.00" in text
    # FID: 11 - 22 = -11, SE sqrt(2/2 + 8/2) = 2.24; IS: 2.5 - 2.4 = +0.10, SE sqrt(0.5/2 + 0.08/2) = 0.54
    assert "| vMF − Gaussian | FID ↓ | -11.00 | 2.24 | better (> 2 SE) |" in text
    assert "| vMF − Gaussian | IS ↑ | +0.10 | 0.54 | within 1 SE |" in text
    assert "vMF − sphere" not in text  # no sphere runs


def test_progress_is_the_latest_checkpoint_when_there_is_one(tmp_path):
    run = tmp_path / "sphere-s0"
    _fake_run(run, "sphere", (10.0, 5.0), (2.0, 2.0), [(500, 20.0)])
    torch.save({"step": 750, "config": {}}, run / "last.pt")
    assert table5.trained_iterations(run) == 750 and table5.logged_iterations(run) == 750


def test_commands_resume_round_robin_and_use_the_stored_concentration(tmp_path, capsys):
    classifier = tmp_path / "classifier.pt"
    torch.save({"model": {"head.weight": torch.randn(10, 64)}, "concentration_mle": 25.06783}, classifier)
    started = tmp_path / "runs" / "gaussian-s0"
    started.mkdir(parents=True)
    torch.save({"step": 500, "config": {}}, started / "last.pt")  # this run has already reached iteration 500
    table5.main(
        [
            "--preset",
            "small",
            "--seeds",
            "0",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--round-robin",
            "1000",
            "--prior-checkpoint",
            str(classifier),
            "--classifier-checkpoint",
            str(classifier),
            "--num-samples",
            "2000",
            "--dry-run",
        ]
    )
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("+ ")]
    training = [line for line in lines if "gan/train.py" in line]
    assert len(training) == 12  # 4 noises x 3 rounds (1000, 2000, 3000 = the end, without --stop-after)
    assert "--sampler gaussian" in training[0] and "--resume --stop-after 1000" in training[0]
    assert "--sampler vmf" in training[1] and "--concentration 25.0678" in training[1]
    assert "--resume" not in training[1] and training[1].endswith("--stop-after 1000")
    assert (
        "--stop-after" not in training[-1] and "--eval-every" not in training[-1]
    )  # periodic IS/FID is off by default
    scoring = [line for line in lines if "gan.fidelity" in line]
    control = [line for line in training if "--sampler vmf-orthogonal" in line]
    assert control and all("--concentration 25.0678" in line and "--prior-checkpoint" not in line for line in control)
    assert len(scoring) == 4 and all(
        "--num-samples 2000" in line and "--classifier-checkpoint" in line for line in scoring
    )


def test_vmf_needs_a_classifier(tmp_path):
    with pytest.raises(ValueError, match="--prior-checkpoint"):
        table5.main(["--preset", "tiny", "--runs-dir", str(tmp_path), "--dry-run"])


def test_keep_copies_what_the_table_reads_and_reports_the_same(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs / "vmf-s0", "vmf", (10.0, 5.0), (2.0, 2.0), [(500, 20.0), (1000, 12.0)])
    (runs / "vmf-s0" / "generator.pt").write_bytes(b"weights")
    torch.save({"step": 1000, "config": {}}, runs / "vmf-s0" / "last.pt")
    (runs / "vmf-s0" / "samples").mkdir()
    for iteration in (500, 1000):
        (runs / "vmf-s0" / "samples" / f"iter_{iteration:07d}.png").write_bytes(b"png")
    _fake_run(runs / "sphere-s0", "sphere", (10.0, 5.0), (2.0, 2.0), [])
    for path in (runs / "sphere-s0").glob("fidelity-*.json"):
        path.unlink()  # trained but not scored: not kept
    kept = tmp_path / "kept"
    table5.main(
        [
            "--preset",
            "small",
            "--samplers",
            "vmf",
            "sphere",
            "--seeds",
            "0",
            "--runs-dir",
            str(runs),
            "--report-only",
            "--keep",
            str(kept),
        ]
    )
    assert sorted(path.name for path in (kept / "vmf-s0").iterdir()) == [
        "config.json",
        "fidelity-classifier-abc-n2000.json",
        "fidelity-classifier-abc-n5000.json",
        "generator.pt",
        "iter_0001000.png",
        "metrics.jsonl",
    ]
    assert not (kept / "sphere-s0").exists()
    assert table5.summarize([kept / "vmf-s0"]) == table5.summarize([runs / "vmf-s0"])


def _scored_run(folder, sampler, scores):
    folder.mkdir(parents=True)
    config = {"sampler": sampler, "iterations": 3000, "concentration": 25.0}
    (folder / "config.json").write_text(json.dumps({"kind": "gan", "config": config, "command": "gan/train.py"}))
    record = {
        "num_samples": 2000,
        "feature_extractor": "classifier-ev",
        "noise": sampler,
        "reference_id": "ref",
        "inception_score_std": 0.1,
        "gan_test_classifier": "/x/evaluator-convnet-32/classifier.pt",
        "gan_test_num_samples": 2000,
        "gan_train_architecture": "convnet-32",
        "gan_train_epochs": 10,
        "gan_train_num_samples": 10000,
        "intra_fid_per_class": [0.0] * 10,
        **scores,
    }
    (folder / "fidelity-classifier-ev-n2000.json").write_text(json.dumps(record))


def test_class_aware_scores_and_paired_differences(tmp_path):
    runs = []
    # GAN-test per seed: vMF 0.50, 0.60, 0.70; orthogonal control 0.45, 0.50, 0.65 -> differences 0.05, 0.10, 0.05
    for sampler, tests, fids in (
        ("vmf", (0.5, 0.6, 0.7), (10.0, 20.0, 30.0)),
        ("vmf-orthogonal", (0.45, 0.5, 0.65), (12.0, 21.0, 33.0)),
    ):
        for seed, (test, fid) in enumerate(zip(tests, fids)):
            runs.append(tmp_path / f"{sampler}-s{seed}")
            _scored_run(
                runs[-1],
                sampler,
                {
                    "inception_score_mean": 2.0,
                    "frechet_inception_distance": fid,
                    "gan_test": test,
                    "gan_train": 0.3,
                    "intra_fid": fid * 2,
                },
            )
    text = table5.summarize(runs)
    assert "| vMF | 3 | 40.00 ± 20.00 | 0.600 ± 0.100 | 0.300 ± 0.000 |" in text
    assert "| vMF, orthogonal head | 3 | 44.00 ± 21.07 | 0.533 ± 0.104 | 0.300 ± 0.000 |" in text
    # differences 0.05, 0.10, 0.05: mean 0.0667, sd 0.0289, SE 0.0167 -> 4 SE
    assert "| vMF − vMF, orthogonal head | GAN-test ↑ | +0.067 | 0.017 | 3 | better (> 2 SE) |" in text
    # FID differences -2, -1, -3: mean -2, sd 1, SE 0.577 -> 3.5 SE, although the unpaired SE (9.6) would hide it
    assert "| vMF − vMF, orthogonal head | FID ↓ | -2.00 | 0.58 | 3 | better (> 2 SE) |" in text
    assert "| vMF − vMF, orthogonal head | GAN-train ↑ | +0.000 | 0.000 | 3 | within 1 SE |" in text
    assert "a `convnet-32` trained for 10 epochs on 10000 generated images" in text


def test_the_table_reads_itself_under_the_pre_stated_criteria(tmp_path):
    runs = []
    for sampler, gan_train in (("vmf", (0.25, 0.32, 0.26)), ("gaussian", (0.20, 0.22, 0.21))):
        for seed, value in enumerate(gan_train):
            runs.append(tmp_path / f"{sampler}-s{seed}")
            scores = {"inception_score_mean": 2.0, "frechet_inception_distance": 10.0, "intra_fid": 9.0}
            _scored_run(runs[-1], sampler, {**scores, "gan_train": value})
    text = table5.summarize(runs, planned_seeds=5)
    # GAN-train differences 0.05, 0.10, 0.05 (4 SE) on 3 of the 5 planned seeds, no orthogonal control
    assert (
        "**Reading under the criteria stated before the numbers: provisional, 3 of 5 paired seeds: class-aware "
        "noise helps here (GAN-train); the control (vMF, orthogonal head) has no runs, so where the gain comes from "
        "is open.**"
    ) in text
    assert "Reading under" not in table5.summarize([run for run in runs if "vmf" in run.name])


def test_plot_draws_the_scoring_setting_with_the_most_runs(tmp_path, monkeypatch):
    scores = {"inception_score_mean": 2.0, "frechet_inception_distance": 10.0, "gan_train": 0.3}
    for sampler in ("vmf", "gaussian"):
        for seed in range(2):
            _scored_run(tmp_path / f"{sampler}-s{seed}", sampler, scores)
    # seed 2 of vMF scored with another GAN-test classifier: a setting of one run, which must not be drawn
    _scored_run(tmp_path / "vmf-s2", "vmf", {**scores, "gan_test_classifier": "other.pt"})
    drawn = {}
    monkeypatch.setattr(
        table5, "plot_table5", lambda by_noise, path, caption: drawn.update(by_noise=by_noise, caption=caption) or path
    )
    table5.main(
        ["--preset", "small", "--seeds", "0", "1", "2", "--runs-dir", str(tmp_path), "--report-only"]
        + ["--plot", str(tmp_path / "t5.png")]
    )
    runs = {noise: sorted(r["run"].rsplit("/", 1)[-1] for r in rows) for noise, rows in drawn["by_noise"].items()}
    assert runs == {"vmf": ["vmf-s0", "vmf-s1"], "gaussian": ["gaussian-s0", "gaussian-s1"]}
    assert drawn["caption"] == "2000 generated images per run, features of `classifier-ev`"


def test_plot_without_scored_runs_is_one_error_line(tmp_path, capsys):
    from common.cli import run_cli

    argv = ["--preset", "small", "--seeds", "0", "--runs-dir", str(tmp_path), "--report-only", "--plot", "t.png"]
    assert run_cli(table5.main, argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --plot t.png: no run has been scored yet"]


def test_plot_to_a_path_that_cannot_be_written_is_one_error_line(tmp_path, capsys):
    from common.cli import run_cli

    _scored_run(tmp_path / "vmf-s0", "vmf", {"inception_score_mean": 2.0, "frechet_inception_distance": 10.0})
    (tmp_path / "file").write_text("")
    plot = str(tmp_path / "file" / "t5.png")  # under a file, so its folder cannot be made
    argv = ["--preset", "small", "--seeds", "0", "--runs-dir", str(tmp_path), "--report-only", "--plot", plot]
    assert run_cli(table5.main, argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: --plot {plot}: ")


def test_missing_data_is_one_error_line(tmp_path, capsys):
    from common.cli import run_cli

    code = run_cli(
        table5.main,
        [
            "--preset",
            "small",
            "--samplers",
            "gaussian",
            "--runs-dir",
            str(tmp_path),
            "--data",
            str(tmp_path / "missing.npz"),
        ],
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data ") and "missing.npz" in err and err.count("\n") == 1


def test_a_failed_step_stops_with_one_error_line(tmp_path, capsys, monkeypatch):
    import subprocess

    from common.cli import run_cli

    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: subprocess.CompletedProcess(args, 2))
    code = run_cli(table5.main, ["--preset", "tiny", "--samplers", "gaussian", "--runs-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: this step failed with exit status 2") and err.count("\n") == 1


def _two_noises(tmp_path, control_changes=None, control_kappa=25.0):
    """vMF and orthogonal-control runs, 3 seeds; the control's intra-FID is 2 lower (better) at every seed."""
    runs = []
    for sampler in ("vmf", "vmf-orthogonal"):
        for seed in range(3):
            runs.append(tmp_path / f"{sampler}-s{seed}")
            scores = {
                "inception_score_mean": 2.0,
                "frechet_inception_distance": 10.0,
                "intra_fid": 20.0 + seed - (2.0 if sampler == "vmf-orthogonal" else 0.0),
                **(control_changes or {} if sampler == "vmf-orthogonal" else {}),
            }
            _scored_run(runs[-1], sampler, scores)
            if sampler == "vmf-orthogonal":
                saved = json.loads((runs[-1] / "config.json").read_text())
                saved["config"]["concentration"] = control_kappa
                (runs[-1] / "config.json").write_text(json.dumps(saved))
    return runs


def test_a_difference_says_which_noise_is_better():
    assert table5.reading(+2.0, 0.5, "↓") == "worse (> 2 SE)" and table5.reading(-2.0, 0.5, "↓") == "better (> 2 SE)"
    assert table5.reading(+0.6, 0.5, "↑") == "better (> 1 SE)" and table5.reading(-0.4, 0.5, "↑") == "within 1 SE"


def test_a_worse_score_is_read_as_worse(tmp_path):
    text = table5.summarize(_two_noises(tmp_path))
    # vMF - control: intra-FID +2 at every seed (SE 0): vMF is worse, not merely "beyond 2 SE".
    assert "| vMF − vMF, orthogonal head | intra-FID ↓ | +2.00 | 0.00 | 3 | worse (> 2 SE) |" in text


def test_runs_scored_differently_are_not_compared(tmp_path):
    text = table5.summarize(_two_noises(tmp_path, control_changes={"gan_train_epochs": 30}))
    assert "vMF − vMF, orthogonal head" not in text  # GAN-train trained 30 epochs for one side, 10 for the other


def test_a_control_at_another_kappa_is_not_compared(tmp_path):
    text = table5.summarize(_two_noises(tmp_path, control_kappa=10.0))
    assert "| vMF − vMF, orthogonal head | not compared: different kappa |" in text
    assert "intra-FID ↓ | +2.00" not in text


def test_runs_of_one_noise_at_two_kappas_are_refused(tmp_path):
    runs = _two_noises(tmp_path)
    saved = json.loads((runs[0] / "config.json").read_text())
    saved["config"]["concentration"] = 12.0
    (runs[0] / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="different kappa"):
        table5.summarize(runs)


def test_scoring_is_skipped_only_for_a_complete_json_of_the_same_extractor(tmp_path, monkeypatch):
    monkeypatch.setattr(table5, "_extractor_name", lambda checkpoint: "classifier-ev")
    args = argparse.Namespace(
        classifier_checkpoint="evaluator.pt", intra_fid=True, gan_test_classifier="evaluator.pt", gan_train=None
    )
    run = tmp_path / "vmf-s0"
    assert not table5._scored(tmp_path / "missing", 2000, args)
    _scored_run(run, "vmf", {"intra_fid": 9.0, "gan_test": 0.2})
    assert table5._scored(run, 2000, args) and not table5._scored(run, 5000, args)
    assert not table5._scored(run, 2000, argparse.Namespace(**{**vars(args), "gan_train": "convnet-32"}))
    (run / "fidelity-classifier-ev-n2000.json").rename(run / "fidelity-inception-v3-compat-n2000.json")
    assert not table5._scored(run, 2000, args)  # a JSON of another extractor does not count
