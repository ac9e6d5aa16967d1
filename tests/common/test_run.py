"""common.run: a run folder under faults (a second process, damaged files, interruptions, copies, full disks)."""

import json
import os
import signal
import stat
from dataclasses import dataclass

import pytest
import torch

from common.cli import run_cli
from common.run import (
    CONFIG_FILE,
    LAST_CHECKPOINT,
    LOCK_FILE,
    METRICS_FILE,
    CheckpointError,
    MetricsLog,
    RunError,
    RunFolder,
    all_finite,
    atomic_save,
    config_differences,
    interrupts_deferred,
    learning_rate_factor,
    load_checkpoint,
    load_state,
    read_config,
    read_metrics,
    read_run,
    write_config,
)


@dataclass
class Config:
    out: str = "runs/x"
    width: int = 3
    epochs: int = 4
    resume: bool = False


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.read_bytes()) for p in folder.rglob("*") if p.is_file())


def _train(out, epochs, stop_after=None, width=3, resume=False, seed=0):
    """A tiny loop on RunFolder: one optimizer step per epoch on a random batch; returns the weights."""
    config = Config(out=str(out), width=width, epochs=epochs, resume=resume)
    torch.manual_seed(seed)
    model = torch.nn.Linear(width, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with RunFolder.open(out, config, "toy", resume=resume, may_change=("epochs",), step_key="epoch") as run:
        if run.checkpoint:
            load_state(model, run.checkpoint["model"], out / LAST_CHECKPOINT)
            load_state(optimizer, run.checkpoint["optimizer"], out / LAST_CHECKPOINT)
        run.begin()
        run.restore_rng()
        for epoch in range(run.step + 1, (stop_after or epochs) + 1):
            loss = model(torch.randn(5, width)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.save(epoch, model=model, optimizer=optimizer, metrics={"loss": float(loss.detach())})
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_interrupted_and_resumed_run_equals_straight_run_and_metrics_match(tmp_path):
    straight = _train(tmp_path / "a", 4)
    _train(tmp_path / "b", 4, stop_after=2)
    resumed = _train(tmp_path / "b", 4, resume=True)
    assert torch.equal(straight, resumed)
    assert read_metrics(tmp_path / "a" / METRICS_FILE) == read_metrics(tmp_path / "b" / METRICS_FILE)
    assert [r["epoch"] for r in read_metrics(tmp_path / "b" / METRICS_FILE)] == [1, 2, 3, 4]
    checkpoint = load_checkpoint(tmp_path / "b" / LAST_CHECKPOINT)
    assert checkpoint["step"] == 4 and checkpoint["num_processes"] == 1 and checkpoint["kind"] == "toy"


def test_fault1_second_process_on_one_folder_is_refused(tmp_path):
    config = Config(out=str(tmp_path / "r"))
    with RunFolder.open(tmp_path / "r", config, "toy") as run:
        run.begin()
        with pytest.raises(RunError, match="in use by another process"):
            RunFolder.open(tmp_path / "r", config, "toy")
        assert json.loads((tmp_path / "r" / CONFIG_FILE).read_text())["config"]["width"] == 3
    assert not (tmp_path / "r" / LOCK_FILE).exists()  # released and removed by its creator


def test_fault2_damaged_or_empty_checkpoint_is_an_error_not_a_silent_new_run(tmp_path):
    _train(tmp_path / "r", 4, stop_after=2)
    path = tmp_path / "r" / LAST_CHECKPOINT
    data = path.read_bytes()
    for damaged in (data[: len(data) // 2], b""):
        path.write_bytes(damaged)
        before = _listing(tmp_path / "r")
        with pytest.raises(CheckpointError, match="last.pt"):
            _train(tmp_path / "r", 4, resume=True)
        assert _listing(tmp_path / "r") == before


def test_fault3_run_without_checkpoint_is_never_taken_for_an_empty_folder(tmp_path):
    _train(tmp_path / "r", 4, stop_after=2)
    (tmp_path / "r" / LAST_CHECKPOINT).unlink()
    before = _listing(tmp_path / "r")
    for resume in (True, False):
        with pytest.raises(RunError, match="last.pt is missing"):
            _train(tmp_path / "r", 4, resume=resume)
    assert _listing(tmp_path / "r") == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="not empty"):
        _train(tmp_path / "other", 4)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
    with pytest.raises(RunError, match="no last.pt"):
        _train(tmp_path / "empty", 4, resume=True)
    assert not (tmp_path / "empty").exists()


def test_run_stopped_before_its_first_checkpoint_starts_over_with_the_same_config(tmp_path):
    config = Config(out=str(tmp_path / "r"), epochs=4)
    with RunFolder.open(tmp_path / "r", config, "toy") as run:
        run.begin()  # killed here, before the first save
    with pytest.raises(RunError, match="width: 3 -> 5"):  # another config: refused
        _train(tmp_path / "r", 4, width=5)
    _train(tmp_path / "r", 4)
    assert [r["epoch"] for r in read_metrics(tmp_path / "r" / METRICS_FILE)] == [1, 2, 3, 4]


def test_fault4_metrics_cut_back_to_the_checkpoint_and_torn_line_dropped(tmp_path):
    _train(tmp_path / "r", 4, stop_after=2)
    metrics = tmp_path / "r" / METRICS_FILE
    # A kill after epoch 3's record but before its checkpoint, and a torn line from a kill inside a write.
    metrics.write_text(metrics.read_text() + json.dumps({"epoch": 3, "loss": 9.0}) + "\n" + '{"epoch": 4, "lo')
    _train(tmp_path / "r", 4, resume=True)
    records = read_metrics(metrics)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4] and records[2]["loss"] != 9.0
    assert metrics.read_text().endswith("\n")


def test_fault5_identity_is_the_config_not_the_path(tmp_path):
    straight = _train(tmp_path / "a", 4)
    _train(tmp_path / "b", 4, stop_after=2)
    os.rename(tmp_path / "b", tmp_path / "moved")
    resumed = _train((tmp_path / "moved").resolve(), 4, resume=True)
    assert torch.equal(straight, resumed)
    with pytest.raises(RunError, match=r"Differing keys: width: 3 -> 4"):
        _train(tmp_path / "moved", 6, width=4, resume=True)


def test_fault6_architecture_mismatch_full_disk_and_interrupt_are_one_error_line(tmp_path, monkeypatch, capsys):
    _train(tmp_path / "r", 4, stop_after=1)
    state = load_checkpoint(tmp_path / "r" / LAST_CHECKPOINT)["model"]
    with pytest.raises(CheckpointError, match="do not fit"):
        load_state(torch.nn.Linear(7, 1), state, "last.pt")

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(RunError, match="No space left on device"):
        atomic_save({"a": 1}, tmp_path / "r" / "x.pt")
    monkeypatch.undo()
    assert not [p for p in (tmp_path / "r").iterdir() if p.name.endswith(".tmp")]

    def main(argv):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C inside a write: held back until the write is done
            atomic_save({"a": 1}, tmp_path / "r" / "y.pt")
        raise AssertionError("not reached")

    assert run_cli(main, []) == 130
    assert load_checkpoint(tmp_path / "r" / "y.pt") == {"a": 1}
    assert capsys.readouterr().err.count("error:") == 1


def test_fault7_sigterm_temp_files_and_file_mode(tmp_path, capsys):
    def main(argv):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            atomic_save({"b": 2}, tmp_path / "z.pt")
        raise AssertionError("not reached")

    assert run_cli(main, []) == 143
    assert "terminated" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "z.pt") == {"b": 2}
    assert stat.S_IMODE((tmp_path / "z.pt").stat().st_mode) == 0o666 & ~_umask()
    _train(tmp_path / "r", 4, stop_after=1)
    stale = tmp_path / "r" / ".last.pt.abc123.tmp"
    stale.write_bytes(b"half")
    _train(tmp_path / "r", 4, resume=True)
    assert not stale.exists()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_failed_start_leaves_folder_as_found(tmp_path):
    config = Config(out=str(tmp_path / "new"))
    with pytest.raises(ValueError, match="data"), RunFolder.open(tmp_path / "new", config, "toy"):
        raise ValueError("bad data file")  # e.g. the data failed to load before begin()
    assert not (tmp_path / "new").exists()
    _train(tmp_path / "r", 4, stop_after=2)
    before = _listing(tmp_path / "r")
    with pytest.raises(RunError, match="pass --resume"):
        _train(tmp_path / "r", 4)
    assert _listing(tmp_path / "r") == before


def test_process_count_and_kind_are_checked(tmp_path):
    _train(tmp_path / "r", 4, stop_after=1)
    path = tmp_path / "r" / LAST_CHECKPOINT
    checkpoint = torch.load(path)
    torch.save({**checkpoint, "num_processes": 2}, path)
    with pytest.raises(RunError, match="2 process"):
        _train(tmp_path / "r", 4, resume=True)
    torch.save({**checkpoint, "kind": "gan"}, path)
    with pytest.raises(CheckpointError, match="'gan' checkpoint"):
        _train(tmp_path / "r", 4, resume=True)


def test_first_format_checkpoint_loads(tmp_path):
    """A checkpoint of the first layout ("epoch", no "format") resumes."""
    _train(tmp_path / "r", 4, stop_after=2)
    path = tmp_path / "r" / LAST_CHECKPOINT
    checkpoint = torch.load(path)
    legacy = {key: checkpoint[key] for key in ("model", "optimizer", "config", "rng", "state")}
    torch.save({**legacy, "epoch": 2, "config": {**legacy["config"], "out": "/elsewhere"}}, path)
    assert torch.equal(_train(tmp_path / "r", 4, resume=True), _train(tmp_path / "a", 4))


def test_all_finite_and_schedules():
    assert all_finite(torch.tensor([1.0, 2.0])) and not all_finite(torch.tensor([1.0, float("nan")]))
    assert learning_rate_factor("cosine", 0, 10) == 1.0 and learning_rate_factor("cosine", 10, 10) == pytest.approx(0)
    assert learning_rate_factor("cosine", 5, 10) == pytest.approx(0.5)
    assert learning_rate_factor("linear", 3, 4) == pytest.approx(0.25)
    assert learning_rate_factor("step", 0, 1, epoch=151, milestones=(150, 180)) == pytest.approx(0.1)
    assert learning_rate_factor("step", 0, 1, epoch=150, milestones=(150, 180)) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        learning_rate_factor("exp", 0, 1)


# -- the plain file helpers (moved here with common.runs's tests) --------------------------------------------------


def test_write_and_read_config_and_the_kind_check(tmp_path):
    run = tmp_path / "run"
    write_config(run, Config(width=7), kind="vae")
    assert read_config(run) == ("vae", {"out": "runs/x", "width": 7, "epochs": 4, "resume": False})
    assert "command" not in json.loads((run / CONFIG_FILE).read_text())
    write_config(run, {"latent_dims": (3, 5)}, kind="vae", command="python -m vae.train --latent-dim 3")
    assert json.loads((run / CONFIG_FILE).read_text())["command"] == "python -m vae.train --latent-dim 3"
    assert read_config(run)[1] == {"latent_dims": [3, 5]}  # tuples come back as JSON lists
    assert read_run(run, ("vae", "gan"))[0] == "vae"
    with pytest.raises(RunError, match="holds a 'vae' run; expected 'gan'"):
        read_run(run, ("gan",))
    with pytest.raises(FileNotFoundError, match="run folder"):
        read_config(tmp_path / "nothing")
    (tmp_path / "bare").mkdir()
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        read_config(tmp_path / "bare")
    (run / CONFIG_FILE).write_text('{"config": {}}')
    with pytest.raises(RunError, match="damaged"):
        read_config(run)


def test_config_differences_name_each_key_and_skip_invocation_keys():
    saved = json.loads(json.dumps({"latent_dims": (3, 5), "width": 3, "learning_rate": 0.001, "out": "a"}))
    assert (
        config_differences(
            saved, {"latent_dims": (3, 5), "width": 3, "learning_rate": 0.001, "out": "b", "resume": True}
        )
        == []
    )  # tuples equal JSON lists; out and resume may differ
    assert config_differences(saved, {"latent_dims": (3, 5), "width": 6, "learning_rate": 0.1, "out": "a"}) == [
        "learning_rate: 0.001 -> 0.1",
        "width: 3 -> 6",
    ]
    assert config_differences(saved, {"latent_dims": (3,), "width": 6, "learning_rate": 0.001}, ignore=("width",)) == [
        "latent_dims: [3, 5] -> [3]"
    ]


def test_atomic_save_replaces_and_a_failed_write_leaves_the_old_file_alone(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"a": torch.ones(2)}, path)
    atomic_save({"a": torch.zeros(2)}, path)
    assert torch.equal(torch.load(path)["a"], torch.zeros(2))

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"bad": Unpicklable()}, path)
    assert torch.equal(torch.load(path)["a"], torch.zeros(2))  # the old file survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # and no temp file is left


def test_metrics_log_appends_json_lines(tmp_path):
    log = MetricsLog(tmp_path / METRICS_FILE)
    log.write({"epoch": 1, "loss": torch.tensor(2.5)})
    log.write({"epoch": 2, "loss": float("nan"), "inf": float("inf")})
    assert read_metrics(tmp_path / METRICS_FILE) == [
        {"epoch": 1, "loss": 2.5},
        {"epoch": 2, "loss": "nan", "inf": "inf"},
    ]
    assert read_metrics(tmp_path / "missing.jsonl") == []
    with pytest.raises(TypeError, match="dict"):
        log.write([1, 2])
    with open(tmp_path / METRICS_FILE, "a") as stream:
        stream.write('{"epoch": 3, "lo')  # a torn last line is skipped; a torn line elsewhere is damage
    assert [r["epoch"] for r in read_metrics(tmp_path / METRICS_FILE)] == [1, 2]
    with open(tmp_path / METRICS_FILE, "a") as stream:
        stream.write('\n{"epoch": 4}\n')
    with pytest.raises(RunError, match="damaged at line 3"):
        read_metrics(tmp_path / METRICS_FILE)
