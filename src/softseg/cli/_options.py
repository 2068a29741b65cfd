"""Options that several commands share, each defined once (name, choices, help, dest)."""

from __future__ import annotations

import argparse

from softseg.data.cases import LAYOUTS
from softseg.training.config import PRESETS, TrainConfig

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
    for its process (see :func:`softseg.training.runtime.keep_freed_memory`)."""
    parser.set_defaults(keep_memory=True)
