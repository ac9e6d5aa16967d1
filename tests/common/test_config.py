"""common.config: precedence defaults < preset < --config < flags, errors that name the typed flag, and no blank
--help anywhere in the repository's commands."""

import argparse
import importlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.config import GLOSSARY, ConfigError, build_parser, check_positive, option, parse_config

ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass
class Settings:
    learning_rate: float = option(1e-3, "step size")
    num_validation: int = option(100, "held-out images")
    latent_dims: tuple[int, ...] = option((3, 5), "latent dimensions")
    train_subset: int | None = option(None, "first N images")
    progress: bool = option(True, "progress bar")
    head: str = option("linear", "final layer", choices=("linear", "random"))


PRESETS = {"quick": {"learning_rate": 0.5, "num_validation": 7, "latent_dims": (2,)}}


def test_precedence_defaults_preset_file_flags(tmp_path):
    assert parse_config(Settings, [], prog="p", presets=PRESETS) == Settings()
    assert parse_config(Settings, ["--preset", "quick"], prog="p", presets=PRESETS) == Settings(
        learning_rate=0.5, num_validation=7, latent_dims=(2,)
    )
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"num_validation": 9, "latent_dims": [4, 6], "train_subset": 50}))
    config = parse_config(
        Settings, ["--preset", "quick", "--config", str(file), "--num-validation", "11"], prog="p", presets=PRESETS
    )
    assert config == Settings(learning_rate=0.5, num_validation=11, latent_dims=(4, 6), train_subset=50)
    # A run's config.json works as a --config file; its folder does not come along.
    run_file = tmp_path / "config.json"
    run_file.write_text(json.dumps({"kind": "x", "config": {"num_validation": 3, "out": "elsewhere"}}))
    assert (
        parse_config(
            Settings, ["--config", str(run_file), "--no-progress", "--train-subset", "none"], prog="p"
        ).num_validation
        == 3
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-validaton", "3"], "unknown option --num-validaton; did you mean --num-validation?"),
        (["--num_validation", "3"], "did you mean --num-validation"),
        (["--head", "randm"], "--head: must be one of linear, random, got 'randm'; did you mean random?"),
        (["--num-validation", "x"], "--num-validation: expects int"),
        (["--preset", "slow"], "--preset"),
    ],
)
def test_errors_name_the_flag_as_typed(argv, message):
    with pytest.raises(ConfigError) as error:
        parse_config(Settings, argv, prog="p", presets=PRESETS)
    assert message in str(error.value)


@dataclass
class RunSettings:
    out: str = option("runs/x", "run folder")
    width: int = option(8, "hidden units")
    epochs: int = option(3, "epochs")
    resume: bool = option(False, "continue")
    stop_after: int | None = option(None, "stop after this epoch")
    threads: int | None = option(None, "threads")
    cpu: bool = option(False, "the CPU")
    progress: bool = option(False, "a bar")


def test_a_runs_config_json_never_passes_on_how_that_run_was_invoked(tmp_path):
    """--config RUN/config.json takes what the run computes, never its per-invocation keys (INVOCATION_KEYS)."""
    from common.run import INVOCATION_KEYS, write_config

    stopped = RunSettings(
        out=str(tmp_path / "first"), width=16, epochs=9, resume=True, stop_after=2, threads=3, cpu=True, progress=True
    )
    write_config(tmp_path / "first", stopped, kind="toy")
    config = parse_config(
        RunSettings, ["--config", str(tmp_path / "first" / "config.json"), "--out", "second"], prog="p"
    )
    assert config == RunSettings(out="second", width=16, epochs=9)  # stop_after, resume, threads, cpu: defaults
    assert (
        parse_config(
            RunSettings, ["--config", str(tmp_path / "first" / "config.json"), "--stop-after", "4"], prog="p"
        ).stop_after
        == 4
    )  # typed on the command line, they count
    assert {"out", "resume", "stop_after", "threads", "cpu", "progress"} <= set(INVOCATION_KEYS)
    # a flat file may not set them either: the flag is named
    flat = tmp_path / "flat.json"
    flat.write_text(json.dumps({"width": 4, "stop_after": 1}))
    with pytest.raises(ConfigError, match="'stop_after' says how to invoke a command.*pass --stop-after"):
        parse_config(RunSettings, ["--config", str(flat)], prog="p")


def test_config_file_errors_name_the_file_and_key(tmp_path):
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"learning_rat": 1.0}))
    with pytest.raises(ConfigError, match="unknown key 'learning_rat'; did you mean learning_rate"):
        parse_config(Settings, ["--config", str(file)], prog="p")
    file.write_text("{not json")
    with pytest.raises(ConfigError, match="c.json"):
        parse_config(Settings, ["--config", str(file)], prog="p")
    with pytest.raises(ConfigError, match="missing.json.*does not exist"):
        parse_config(Settings, ["--config", str(tmp_path / "missing.json")], prog="p")


def test_checks_name_the_flag_and_option_needs_help():
    with pytest.raises(ConfigError, match="--learning-rate must be positive"):
        check_positive(Settings(learning_rate=0.0), "learning_rate")
    check_positive(Settings(), "learning_rate")
    with pytest.raises(ValueError, match="help"):
        option(1, "")


def test_help_shows_text_and_default():
    text = build_parser(Settings, "p").format_help()
    assert "held-out images (default: 100)" in text and "--no-progress" in text


def _commands() -> list[str]:
    """Every module of the experiment layer that runs as a command."""
    found = []
    for package in ("common", "eval", "vae", "gan", "ckd"):
        for path in sorted((ROOT / package).glob("*.py")):
            text = path.read_text()
            if "\ndef main(" in text and 'if __name__ == "__main__"' in text:
                found.append(f"{package}.{path.stem}")
    return found


def _help_of(module_name: str, monkeypatch) -> list[tuple[str, str]]:
    parsers = []

    def capture(self, file=None):
        parsers.append(self)

    monkeypatch.setattr(argparse.ArgumentParser, "print_help", capture)
    module = importlib.import_module(module_name)
    with pytest.raises(SystemExit):
        module.main(["--help"])
    assert parsers, f"{module_name} --help printed no parser"
    return [
        ((action.option_strings or [action.dest])[-1], action.help or "")
        for action in parsers[-1]._actions
        if not isinstance(action, argparse._HelpAction)
    ]


@pytest.mark.parametrize("module_name", _commands())
def test_no_option_has_empty_help(module_name, monkeypatch):
    options = _help_of(module_name, monkeypatch)
    blank = [name for name, text in options if not text.strip() or text.strip().startswith("(default")]
    assert not blank, f"{module_name}: options without help: {blank}"


def test_glossary_names_are_the_only_spellings():
    """A config field never uses a drifted spelling of a glossary concept."""
    drifted = {"lr", "max_epochs", "iterations", "stop_at", "max_steps", "output", "run_dir", "num_threads", "device"}
    assert set(GLOSSARY) >= {
        "learning_rate",
        "epochs",
        "stop_after",
        "cpu",
        "progress",
        "threads",
        "seed",
        "out",
        "run",
        "data",
    }
    from dataclasses import fields

    from vae.classifier import ClassifierConfig

    assert not drifted & {field.name for field in fields(ClassifierConfig)}


@dataclass
class DriverSettings:
    preset: str = option("chainer", "the training protocol this driver runs", choices=("chainer", "small"))
    seeds: tuple[int, ...] = option((0, 1, 2), "seeds")


def test_a_field_named_preset_is_a_plain_option_without_presets(tmp_path):
    """gan.table5's --preset names the GAN protocol, not a set of the driver's defaults."""
    assert parse_config(DriverSettings, [], prog="p") == DriverSettings()
    assert parse_config(DriverSettings, ["--preset", "small", "--seeds", "4"], prog="p") == DriverSettings(
        "small", (4,)
    )
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"preset": "small"}))
    assert parse_config(DriverSettings, ["--config", str(file)], prog="p").preset == "small"
    with pytest.raises(ConfigError, match="--preset: must be one of chainer, small"):
        parse_config(DriverSettings, ["--preset", "mimicry"], prog="p")


@dataclass
class WithPositional:
    results: tuple[str, ...] = option(help="results files", positional=True)
    section: str = option("t", "section name")


@dataclass
class WithRequired:
    run: str = option(help="run folder")


def test_positional_values_and_required_ones():
    with pytest.raises(ConfigError, match="p: --run is required"):
        parse_config(WithRequired, [], prog="p")
    assert parse_config(WithPositional, ["a.json", "b.json", "--section", "x"], prog="p") == WithPositional(
        results=("a.json", "b.json"), section="x"
    )
    with pytest.raises(ConfigError, match="RESULTS"):
        parse_config(WithPositional, [], prog="p")
