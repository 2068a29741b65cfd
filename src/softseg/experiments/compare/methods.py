"""The methods a comparison trains: (label mode, loss) pairs, parsed and validated here only.

A method is written ``LABEL[:LOSS]`` on the command line (``soft:ce``, ``majority:ce+dml``,
``staple``; the loss defaults to ``ce``), named ``LABEL:LOSS`` in tables and files, and lives
in the folder ``<label>-<loss>`` (``soft-ce``, ``majority-ce+dml``).

``LABEL[:LOSS]@VARIANT`` is an inference variant of that method: the same trained models,
predicted differently (:data:`VARIANTS`: ``tta`` flip test-time augmentation, ``ts``
temperature scaling cross-fitted on the held-out cases, ``tta+ts`` both). It is named
``soft:ce@tta`` and keeps its predictions and evaluation in ``soft-ce@tta/``; its models stay
in the trained method's folder, so nothing trains twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from softseg.errors import SoftsegError
from softseg.model.config import LABEL_MODES, LOSSES, TrainConfig

# Soft labels against the majority vote, each with the paper's loss and with softseg's default
# (CE + Dice semimetric loss); the reference is what `softseg train` trains by default.
DEFAULT_METHODS = ("soft:ce", "soft:ce+dml", "majority:ce", "majority:ce+dml")
DEFAULT_REFERENCE = f"{TrainConfig.label_mode}:{TrainConfig.loss}"
DEFAULT_LOSS = "ce"
VARIANTS = ("tta", "ts", "tta+ts")


@dataclass(frozen=True)
class Method:
    """One way of training: which label the network sees and which loss it minimises."""

    label_mode: str  # one of model.config.LABEL_MODES
    loss: str  # one of model.config.LOSSES
    variant: str = ""  # "" (predict as trained) or one of VARIANTS

    @property
    def name(self) -> str:
        """``label:loss`` (``label:loss@variant``), the name in tables, CSV and JSON."""
        return f"{self.label_mode}:{self.loss}" + (f"@{self.variant}" if self.variant else "")

    @property
    def folder(self) -> str:
        """``label-loss`` (``label-loss@variant``), the method's folder under the comparison's
        output folder: its predictions and evaluation."""
        return f"{self.label_mode}-{self.loss}" + (f"@{self.variant}" if self.variant else "")

    @property
    def trained(self) -> "Method":
        """The method whose models this one predicts with (itself unless a variant)."""
        return Method(self.label_mode, self.loss)

    @property
    def tta(self) -> str:
        return "flip" if "tta" in self.variant.split("+") else "none"

    @property
    def temperature(self) -> bool:
        return "ts" in self.variant.split("+")

    def config(self, base: TrainConfig, seed: int) -> TrainConfig:
        """``base`` with this method's label mode and loss and the given seed."""
        return base.replace(label_mode=self.label_mode, loss=self.loss, seed=seed)


def _parse_one(spec: str) -> Method | str:
    """The method ``spec`` names, or a description of what is wrong with it."""
    trained, _, variant = str(spec).strip().partition("@")
    label, _, loss = trained.partition(":")
    loss = loss or DEFAULT_LOSS
    wrong = []
    if variant and variant not in VARIANTS:
        wrong.append(f"inference variant {variant!r} is not one of {', '.join(VARIANTS)}")
    if label not in LABEL_MODES:
        wrong.append(f"label mode {label!r} is not one of {', '.join(LABEL_MODES)}")
    if loss not in LOSSES:
        wrong.append(f"loss {loss!r} is not one of {', '.join(LOSSES)}")
    return "; ".join(f"{spec!r}: {w}" for w in wrong) if wrong else Method(label, loss, variant)


def parse_methods(specs: Sequence[str], reference: str | None = None) -> tuple[tuple[Method, ...], Method]:
    """The distinct methods of ``specs`` in order, and the reference among them.

    Each spec is ``LABEL[:LOSS]``; ``soft`` and ``soft:ce`` are the same method. Every wrong
    spec is reported at once, with the valid label modes and losses; the reference must be
    one of the methods. ``reference=None`` picks :data:`DEFAULT_REFERENCE` when it is among
    the methods, else the first method. Raises :class:`SoftsegError`.
    """
    parsed = [_parse_one(s) for s in specs]
    problems = [p for p in parsed if isinstance(p, str)]
    if not specs:
        problems.append("none given")
    if problems:
        raise SoftsegError(
            "--methods: expected LABEL[:LOSS][@VARIANT] with LABEL one of " + ", ".join(LABEL_MODES)
            + ", LOSS one of " + ", ".join(LOSSES) + f" (default {DEFAULT_LOSS}) and VARIANT one of "
            + ", ".join(VARIANTS) + ", e.g. soft:ce majority:ce+dml soft:ce@tta; "
            + "; ".join(problems)
        )
    methods = tuple(dict.fromkeys(p for p in parsed if isinstance(p, Method)))
    if reference is None:
        default = _parse_one(DEFAULT_REFERENCE)
        return methods, default if default in methods else methods[0]
    ref = _parse_one(reference)
    if isinstance(ref, str):
        raise SoftsegError(f"--reference: {ref}")
    if ref not in methods:
        raise SoftsegError(
            f"--reference {ref.name}: not among the methods ({', '.join(m.name for m in methods)}); "
            "add it to --methods or choose one of them"
        )
    return methods, ref
