"""Tests for common.runs: dataclass <-> argparse, config files, config checks, atomic saves, metrics."""
import argparse
import json
from dataclasses import dataclass, field
from typing import Optional

import pytest
import torch

from common.runs import (
    MetricsLog,
    add_dataclass_arguments,
    atomic_save,
    check_same_config,
    config_from_args,
    read_config,
    read_metrics,
    write_config,
)


@dataclass
class ToyConfig:
    model: str = "hvae"
    latent_dim: int = 5
    learning_rate: float = 1e-3
    warmup: bool = False
    data: Optional[str] = None
    latent_dims: tuple[int, ...] = (3, 5)
    names: list[str] = field(default_factory=lambda: ["a"])


def _parse(argv):
    parser = add_dataclass_arguments(argparse.ArgumentParser(), ToyConfig)
    return config_from_args(ToyConfig, parser.parse_args(argv))


def test_defaults_round_trip():
    assert _parse([]) == ToyConfig()


def test_options_are_typed():
    config = _parse(
        ["--model", "hvae-l", "--latent-dim", "10", "--learning-rate", "0.01", "--warmup", "--data", "x.npz",
         "--latent-dims", "3", "20", "--names", "p", "q"]
    )
    assert config == ToyConfig("hvae-l", 10, 0.01, True, "x.npz", (3, 20), ["p", "q"])
    assert isinstance(config.latent_dims, tuple)
    assert _parse(["--no-warmup"]).warmup is False


def test_bad_option_value_is_rejected():
    with pytest.raises(SystemExit):
        _parse(["--latent-dim", "three"])


def test_write_and_read_config(tmp_path):
    run = tmp_path / "run"
    write_config(run, ToyConfig(latent_dim=7), kind="vae")
    kind, config = read_config(run)
    assert kind == "vae" and config["latent_dim"] == 7 and config["latent_dims"] == [3, 5]
    assert json.loads((run / "config.json").read_text())["kind"] == "vae"
    assert "command" not in json.loads((run / "config.json").read_text())
    write_config(run, ToyConfig(), kind="vae", command="python -m vae.train --latent-dim 3")
    assert json.loads((run / "config.json").read_text())["command"] == "python -m vae.train --latent-dim 3"
    with pytest.raises(FileNotFoundError, match="run folder"):
        read_config(tmp_path / "nothing")
    with pytest.raises(ValueError, match="kind"):
        write_config(run, ToyConfig(), kind="")


def test_check_same_config_names_each_differing_key(tmp_path):
    write_config(tmp_path, ToyConfig(), kind="vae")
    _, saved = read_config(tmp_path)
    check_same_config(saved, ToyConfig())  # tuples vs JSON lists compare equal
    with pytest.raises(ValueError) as error:
        check_same_config(saved, ToyConfig(latent_dim=6, learning_rate=0.1))
    message = str(error.value)
    assert "latent_dim: 5 -> 6" in message and "learning_rate: 0.001 -> 0.1" in message
    assert "model" not in message
    check_same_config(saved, ToyConfig(latent_dim=6), ignore=("latent_dim",))


def test_atomic_save_replaces_and_leaves_no_temp_on_failure(tmp_path):
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_metrics_log_appends_json_lines(tmp_path):
    log = MetricsLog(tmp_path / "m" / "metrics.jsonl")
    log.write({"epoch": 1, "loss": torch.tensor(2.5)})
    log.write({"epoch": 2, "loss": float("nan")})
    records = read_metrics(tmp_path / "m" / "metrics.jsonl")
    assert records == [{"epoch": 1, "loss": 2.5}, {"epoch": 2, "loss": "nan"}]
    assert read_metrics(tmp_path / "missing.jsonl") == []
    with pytest.raises(TypeError, match="dict"):
        log.write([1, 2])


def test_help_texts_come_from_field_comments():
    import argparse
    import dataclasses

    from common.runs import add_dataclass_arguments

    @dataclasses.dataclass
    class Commented:
        steps: int = 3  # optimizer steps to take
        name: str = "x"

    parser = add_dataclass_arguments(argparse.ArgumentParser(), Commented)
    helps = {action.dest: action.help for action in parser._actions}
    assert helps["steps"] == "optimizer steps to take (default: 3)"
    assert helps["name"] == "(default: x)"
