"""gan.table5: the commands it runs, and the mean ± sd table it writes (on hand-made run folders)."""
import json

import pytest
import torch

from gan import table5


def _fake_run(folder, sampler, fids, iscores, periodic):
    """A finished run folder: config.json, one fidelity JSON per (num_samples, FID, IS), periodic FIDs."""
    folder.mkdir(parents=True)
    config = {"sampler": sampler, "iterations": 3000, "concentration": 25.0 if sampler == "vmf" else None}
    (folder / "config.json").write_text(json.dumps({"kind": "gan", "config": config,
                                                    "command": f"gan/train.py --sampler {sampler}"}))
    for num_samples, fid, score in zip((2000, 5000), fids, iscores):
        (folder / f"fidelity-classifier-abc-n{num_samples}.json").write_text(json.dumps({
            "inception_score_mean": score, "inception_score_std": 0.1, "frechet_inception_distance": fid,
            "num_samples": num_samples, "feature_extractor": "classifier-abc", "noise": sampler,
            "reference_id": "vmfprior-cifar-train-n10000", "command": f"python -m gan.fidelity --run {folder.name}"}))
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"iteration": iteration, "frechet_inception_distance": fid}) + "\n" for iteration, fid in periodic))


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
    assert "| vMF − Gaussian | FID | -11.00 | 2.24 | yes (> 2 SE) |" in text
    assert "| vMF − Gaussian | IS | +0.10 | 0.54 | no |" in text
    assert "vMF − sphere" not in text  # no sphere runs


def test_progress_is_the_latest_checkpoint_when_there_is_one(tmp_path):
    run = tmp_path / "sphere-s0"
    _fake_run(run, "sphere", (10.0, 5.0), (2.0, 2.0), [(500, 20.0)])
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "latest").write_text("iter_0000750\n")
    assert table5.trained_iterations(run) == 750 and table5.logged_iterations(run) == 750


def test_commands_resume_round_robin_and_use_the_stored_concentration(tmp_path, capsys):
    classifier = tmp_path / "classifier.pt"
    torch.save({"model": {"head.weight": torch.randn(10, 64)}, "concentration_mle": 25.06783}, classifier)
    started = tmp_path / "runs" / "gaussian-s0" / "checkpoints"
    started.mkdir(parents=True)
    (started / "latest").write_text("iter_0000500\n")  # this run has already reached iteration 500
    table5.main(["--preset", "small", "--seeds", "0", "--runs-dir", str(tmp_path / "runs"), "--round-robin", "1000",
                 "--prior-checkpoint", str(classifier), "--classifier-checkpoint", str(classifier),
                 "--num-samples", "2000", "--dry-run"])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("+ ")]
    training = [line for line in lines if "gan/train.py" in line]
    assert len(training) == 9  # 3 noises x 3 rounds (1000, 2000, 3000 = the end, without --stop-at)
    assert "--sampler gaussian" in training[0] and "--resume --stop-at 1000" in training[0]
    assert "--sampler vmf" in training[1] and "--concentration 25.0678" in training[1]
    assert "--resume" not in training[1] and training[1].endswith("--stop-at 1000")
    assert "--stop-at" not in training[-1] and "--eval-every" not in training[-1]  # periodic IS/FID is off by default
    scoring = [line for line in lines if "gan.fidelity" in line]
    assert len(scoring) == 3 and all("--num-samples 2000" in line and "--classifier-checkpoint" in line
                                     for line in scoring)


def test_vmf_needs_a_classifier(tmp_path):
    with pytest.raises(ValueError, match="--prior-checkpoint"):
        table5.main(["--preset", "tiny", "--runs-dir", str(tmp_path), "--dry-run"])


def test_keep_copies_what_the_table_reads_and_reports_the_same(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs / "vmf-s0", "vmf", (10.0, 5.0), (2.0, 2.0), [(500, 20.0), (1000, 12.0)])
    (runs / "vmf-s0" / "checkpoints" / "iter_0001000").mkdir(parents=True)
    (runs / "vmf-s0" / "checkpoints" / "latest").write_text("iter_0001000\n")
    (runs / "vmf-s0" / "samples").mkdir()
    for iteration in (500, 1000):
        (runs / "vmf-s0" / "samples" / f"iter_{iteration:07d}.png").write_bytes(b"png")
    _fake_run(runs / "sphere-s0", "sphere", (10.0, 5.0), (2.0, 2.0), [])
    for path in (runs / "sphere-s0").glob("fidelity-*.json"):
        path.unlink()  # trained but not scored: not kept
    kept = tmp_path / "kept"
    table5.main(["--preset", "small", "--samplers", "vmf", "sphere", "--seeds", "0", "--runs-dir", str(runs),
                 "--report-only", "--keep", str(kept)])
    assert sorted(path.name for path in (kept / "vmf-s0").iterdir()) == [
        "config.json", "fidelity-classifier-abc-n2000.json", "fidelity-classifier-abc-n5000.json",
        "iter_0001000.png", "metrics.jsonl"]
    assert not (kept / "sphere-s0").exists()
    assert table5.summarize([kept / "vmf-s0"]) == table5.summarize([runs / "vmf-s0"])
