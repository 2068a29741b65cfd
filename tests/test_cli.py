"""The command line's shared options: defined once, the same on every command, defaults taken
from the library's configuration."""

from __future__ import annotations

import argparse

import pytest

from softseg.cli import build_parser, main
from softseg.cli._options import LAYOUT_CHOICES
from softseg.data.cases import LAYOUTS
from softseg.experiments.demo import DEMO_3D, DemoSettings
from softseg.inference import BATCH_SIZE
from softseg.model.config import TrainConfig

LONG_COMMANDS = ("train", "predict", "calibrate", "threshold", "evaluate", "demo", "compare", "reproduce")
MEMORY_COMMANDS = ("train", "predict", "calibrate", "threshold", "export", "demo", "compare", "reproduce")


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def test_every_long_command_has_one_no_progress_option():
    commands = _commands()
    for name in LONG_COMMANDS:
        action = _option(commands[name], "--no-progress")
        assert action is not None, name
        assert (action.dest, action.default, action.const) == ("progress", True, False), name


def test_layout_has_the_same_choices_wherever_a_dataset_is_read():
    assert LAYOUT_CHOICES == ("auto", *LAYOUTS)
    having = {name: _option(p, "--layout") for name, p in _commands().items()}
    assert {n for n, a in having.items() if a} == {
        "check", "labels", "train", "predict", "calibrate", "threshold", "evaluate", "compare"}
    for name, action in having.items():
        if action:
            assert tuple(action.choices) == LAYOUT_CHOICES and action.default == "auto", name
            assert action.help == having["check"].help, name


def test_help_defaults_come_from_the_configuration():
    commands = _commands()
    defaults = TrainConfig()
    train = commands["train"]
    for flag, field in (("--epochs", "epochs"), ("--batch-size", "batch_size"), ("--lr", "lr"),
                        ("--crop-size", "crop_size"), ("--val-fraction", "val_fraction")):
        assert f"({getattr(defaults, field)})" in _option(train, flag).help, flag
    assert _option(commands["predict"], "--batch-size").default == BATCH_SIZE
    demo_epochs = _option(commands["demo"], "--epochs").help  # each mode's own default
    assert f"default: {DemoSettings().epochs}; 3d: {DEMO_3D.epochs}" in demo_epochs
    assert f"default: {defaults.encoder_weights}" in _option(train, "--encoder-weights").help


def test_commands_that_train_or_predict_tune_memory_and_the_others_do_not():
    for name, parser in _commands().items():
        assert parser.get_default("keep_memory") is (True if name in MEMORY_COMMANDS else None), name


def test_demo_help_and_readme_state_what_docs_measurements_records():
    import re
    from pathlib import Path

    root = Path(__file__).parents[1]
    text = " ".join(_commands()["demo"].format_help().split())
    page = (root / "docs" / "measurements.md").read_text()
    first_screen = (root / "README.md").read_text().split("\n## ", 1)[0]
    printed = page.split("$ time softseg demo --out softseg-demo\n", 1)[1].split("```", 1)[0]
    train_2d = re.search(r"^time: data \d+ s, train (\d+) s", printed, re.M).group(1)
    demo_2d, train_row = re.search(r"demo \*\*(\d+) s\*\* on an idle machine, \*\*(\d+) s\*\* of it", page).groups()
    train_3d = re.search(r"training (\d+) s \(the CE \+ DML default\)[^|]*\| `time softseg demo --dims 3d`", page).group(1)
    assert train_row == train_2d
    # the README's AVX2 fp32 rows: the numbers the demo printed, and its times
    assert f"| demo {demo_2d} s ({train_2d} s training) |" in first_screen
    for task in ("task01", "task02"):
        numbers = re.search(rf"^{task}\s+(.+)$", printed, re.M).group(1).split()
        assert f"| {task} | {' | '.join(numbers)} |" in first_screen, task
    assert f"training in fp32, {train_2d} s of it" in text and "AVX-512 bf16" in text
    assert f"training {train_3d} s, fp32" in text


def test_train_accepts_the_old_task_spelling(tmp_path, capsys, caplog):
    # the preset resolves before the data is read, so a missing folder shows the name worked
    assert main(["train", str(tmp_path / "none"), "--out", str(tmp_path / "o"),
                 "--preset", "brain-tumor-task2", "--encoder-weights", "none"]) == 2
    err = capsys.readouterr().err
    assert "unknown QUBIQ task" not in err and str(tmp_path / "none") in err
    assert main(["train", str(tmp_path), "--out", str(tmp_path / "o"), "--preset", "liver"]) == 2
    assert "unknown QUBIQ task 'liver'; expected one of: brain-growth-task01" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["compare", "reproduce"])
def test_seeds_default_to_the_papers_three(command):
    assert _option(_commands()[command], "--seeds").default == [0, 1, 2]


def test_model_options_are_defined_once_and_default_to_no_leakage():
    commands = _commands()
    for flag, having, default in (
        ("--checkpoint", {"predict", "calibrate", "threshold", "export"}, "last"),
        ("--temperature", {"predict", "threshold", "export"}, "auto"),
        ("--tta", {"predict", "threshold"}, "none"),
    ):
        actions = {name: _option(p, flag) for name, p in commands.items()}
        assert {n for n, a in actions.items() if a} == having, flag
        first = actions[sorted(having)[0]]
        for name in having:
            assert actions[name].default == default, (flag, name)
            assert (actions[name].help, actions[name].choices) == (first.help, first.choices), (flag, name)
    assert tuple(_option(commands["predict"], "--tta").choices) == ("none", "flip")
    assert tuple(_option(commands["predict"], "--temperature").choices) == ("auto", "off")
