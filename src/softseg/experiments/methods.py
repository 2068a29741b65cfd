"""The methods a comparison trains: (label mode, loss) pairs, parsed and validated here only.

A method is written ``LABEL[:LOSS]`` on the command line (``soft:ce``, ``majority:ce+dml``,
``staple``; the loss defaults to ``ce``), named ``LABEL:LOSS`` in tables and files, and lives
in the folder ``<label>-<loss>`` (``soft-ce``, ``majority-ce+dml``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from softseg.errors import SoftsegError
from softseg.training.config import LABEL_MODES, LOSSES, TrainConfig

DEFAULT_METHODS = ("soft:ce", "majority:ce", "random_rater:ce", "staple:ce")
DEFAULT_REFERENCE = "soft:ce"
DEFAULT_LOSS = "ce"


@dataclass(frozen=True)
class Method:
    """One way of training: which label the network sees and which loss it minimises."""

    label_mode: str  # one of training.config.LABEL_MODES
    loss: str  # one of training.config.LOSSES

    @property
    def name(self) -> str:
        """``label:loss``, the name in tables, CSV and JSON."""
        return f"{self.label_mode}:{self.loss}"

    @property
    def folder(self) -> str:
        """``label-loss``, the method's folder under the comparison's output folder."""
        return f"{self.label_mode}-{self.loss}"

    def config(self, base: TrainConfig, seed: int) -> TrainConfig:
        """``base`` with this method's label mode and loss and the given seed."""
        return base.replace(label_mode=self.label_mode, loss=self.loss, seed=seed)


def _parse_one(spec: str) -> Method | str:
    """The method ``spec`` names, or a description of what is wrong with it."""
    label, _, loss = str(spec).strip().partition(":")
    loss = loss or DEFAULT_LOSS
    wrong = []
    if label not in LABEL_MODES:
        wrong.append(f"label mode {label!r} is not one of {', '.join(LABEL_MODES)}")
    if loss not in LOSSES:
        wrong.append(f"loss {loss!r} is not one of {', '.join(LOSSES)}")
    return "; ".join(f"{spec!r}: {w}" for w in wrong) if wrong else Method(label, loss)


def parse_methods(specs: Sequence[str], reference: str = DEFAULT_REFERENCE) -> tuple[tuple[Method, ...], Method]:
    """The distinct methods of ``specs`` in order, and the reference among them.

    Each spec is ``LABEL[:LOSS]``; ``soft`` and ``soft:ce`` are the same method. Every wrong
    spec is reported at once, with the valid label modes and losses; the reference must be
    one of the methods. Raises :class:`SoftsegError`.
    """
    parsed = [_parse_one(s) for s in specs]
    problems = [p for p in parsed if isinstance(p, str)]
    if not specs:
        problems.append("none given")
    if problems:
        raise SoftsegError(
            "--methods: expected LABEL[:LOSS] with LABEL one of " + ", ".join(LABEL_MODES)
            + " and LOSS one of " + ", ".join(LOSSES) + f" (default {DEFAULT_LOSS}), e.g. soft:ce majority:ce+dml; "
            + "; ".join(problems)
        )
    methods = tuple(dict.fromkeys(p for p in parsed if isinstance(p, Method)))
    ref = _parse_one(reference)
    if isinstance(ref, str):
        raise SoftsegError(f"--reference: {ref}")
    if ref not in methods:
        raise SoftsegError(
            f"--reference {ref.name}: not among the methods ({', '.join(m.name for m in methods)}); "
            "add it to --methods or choose one of them"
        )
    return methods, ref
