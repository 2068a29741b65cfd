"""Options that several commands share, each defined once (name, choices, help, dest)."""

from __future__ import annotations

import argparse

from softseg.data.cases import LAYOUTS, CaseQuery
from softseg.inference import DEFAULT_CHECKPOINT, TEMPERATURE_MODES, TTA_MODES, RunOptions
from softseg.model.config import PRESETS, TrainConfig

LAYOUT_CHOICES = ("auto", *LAYOUTS)
_DEFAULTS = TrainConfig()


def add_layout(parser: argparse.ArgumentParser) -> None:
    """``--layout``: on every command that reads a dataset."""
    parser.add_argument(
        "--layout", default="auto", choices=LAYOUT_CHOICES,
        help="dataset layout: auto (default: detected from the folder), qubiq, raters or agreement",
    )


def add_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: on every command that shows progress bars (``args.progress``)."""
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bars (e.g. for log files)")


def add_overwrite(parser: argparse.ArgumentParser, what: str) -> None:
    """``--overwrite``; ``what`` says what it replaces for this command."""
    parser.add_argument("--overwrite", action="store_true", help=what)


def add_resume(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--resume", action="store_true", help=what)


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default=None,
        help="'auto' (default: a GPU if one is visible, else the CPU), 'cpu', 'cuda', 'cuda:N'",
    )


def add_checkpoint(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``: on every command that loads a trained run."""
    parser.add_argument(
        "--checkpoint", default=DEFAULT_CHECKPOINT,
        help=f"'{DEFAULT_CHECKPOINT}' (default: the end of the fixed schedule), 'best' (chosen on "
        "the run's validation cases, so results on those cases are optimistic; a warning says "
        "when it predicts them) or a path to a .pt file",
    )


def add_temperature(parser: argparse.ArgumentParser) -> None:
    """``--temperature``: on every command whose probabilities must equal predict's."""
    parser.add_argument(
        "--temperature", default="auto", choices=TEMPERATURE_MODES,
        help="auto (default): divide each run's logits by the temperatures 'softseg calibrate' "
        "stored in its temperature.json, when there is one; off: never",
    )


def add_tta(parser: argparse.ArgumentParser) -> None:
    """``--tta``: test-time augmentation, on predict and threshold."""
    parser.add_argument(
        "--tta", default="none", choices=TTA_MODES,
        help="none (default), or flip: average the probabilities over the flips the run was "
        "trained with (horizontal if hflip > 0, vertical if vflip > 0, both if both)",
    )


def add_seeds(parser: argparse.ArgumentParser, default: list[int] | None, what: str) -> None:
    shown = " ".join(map(str, default)) if default else f"the configuration's seed, {_DEFAULTS.seed}"
    parser.add_argument("--seeds", nargs="+", type=int, default=default,
                        help=f"{what} (default: {shown})")


def add_encoder_weights(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--encoder-weights", metavar="WEIGHTS",
        help=f"'imagenet' (default: {_DEFAULTS.encoder_weights}; fetched or cached), 'none' "
        "(random initialisation, works offline), or a local weights file",
    )


def add_preset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", metavar="TASK",
        help="start from the paper's settings for a QUBIQ task: " + ", ".join(PRESETS),
    )


def config_default(name: str) -> object:
    """The default of a training setting, for help strings (never retyped)."""
    return getattr(_DEFAULTS, name)


def keep_memory(parser: argparse.ArgumentParser) -> None:
    """Mark a command that trains or predicts: :func:`softseg.cli.main` then tunes malloc
    for its process (see :func:`softseg.model.runtime.keep_freed_memory`)."""
    parser.set_defaults(keep_memory=True)


def run_options(args: argparse.Namespace) -> RunOptions:
    """The :class:`~softseg.inference.RunOptions` of a command's parsed options; an option the
    command does not have keeps its default."""
    defaults = RunOptions()
    return RunOptions(**{name: getattr(args, name, getattr(defaults, name))
                         for name in ("checkpoint", "temperature", "tta", "batch_size", "device", "progress")})


def case_query(args: argparse.Namespace) -> CaseQuery:
    """The :class:`~softseg.data.cases.CaseQuery` of a command's --layout, --tasks, --split and
    --cases (those it has)."""
    tasks, ids = getattr(args, "tasks", None), getattr(args, "cases", None)
    return CaseQuery(layout=getattr(args, "layout", "auto"), tasks=None if tasks is None else tuple(tasks),
                     split=getattr(args, "split", None), case_ids=None if ids is None else tuple(ids))
