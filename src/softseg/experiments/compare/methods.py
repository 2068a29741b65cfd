"""The methods a comparison trains: (label mode, loss) pairs, parsed and validated here only.

A method is written ``LABEL[:LOSS]`` on the command line (``soft:ce``, ``majority:ce+dml``,
``staple``; the loss defaults to ``ce``), named ``LABEL:LOSS`` in tables and files, and lives
in the folder ``<label>-<loss>`` (``soft-ce``, ``majority-ce+dml``).

``ssn`` is the Stochastic Segmentation Network (``TrainConfig.head`` "ssn", Monteiro et al.
2020): one rater drawn per image per step (label mode ``random_rater``) and the Monte Carlo
likelihood of the cross-entropy (loss ``ce``, the only one it takes: ``ssn`` and ``ssn:ce``
are the same method); it is named ``ssn`` and lives in ``ssn/``.

``LABEL[:LOSS]@VARIANT`` is an inference variant of that method: the same trained models,
predicted differently (:data:`VARIANTS`: ``tta`` flip test-time augmentation, ``ts``
temperature scaling cross-fitted on the held-out cases, ``tta+ts`` both; an SSN has no
temperature, so only ``ssn@tta``). It is named
``soft:ce@tta`` and keeps its predictions and evaluation in ``soft-ce@tta/``; its models stay
in the trained method's folder, so nothing trains twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from softseg.errors import SoftsegError
from softseg.model.config import HEAD_DEFAULTS, LABEL_MODES, LOSSES, TrainConfig

# Soft labels against the majority vote, each with the paper's loss and with softseg's default
# (CE + Dice semimetric loss); the reference is what `softseg train` trains by default.
DEFAULT_METHODS = ("soft:ce", "soft:ce+dml", "majority:ce", "majority:ce+dml")
DEFAULT_REFERENCE = f"{TrainConfig.label_mode}:{TrainConfig.loss}"
DEFAULT_LOSS = "ce"
VARIANTS = ("tta", "ts", "tta+ts")
# methods named for their head rather than their label mode and loss (which the head fixes)
SSN = "ssn"
LABELS = (*LABEL_MODES, SSN)


@dataclass(frozen=True)
class Method:
    """One way of training: which label the network sees, which loss it minimises, and the
    network's head (``TrainConfig.head``)."""

    label_mode: str  # one of model.config.LABEL_MODES
    loss: str  # one of model.config.LOSSES
    variant: str = ""  # "" (predict as trained) or one of VARIANTS
    head: str = "deterministic"  # one of model.config.HEAD_KINDS

    @property
    def _trained_name(self) -> str:
        return SSN if self.head == "ssn" else f"{self.label_mode}:{self.loss}"

    @property
    def name(self) -> str:
        """``label:loss`` (``label:loss@variant``; ``ssn``, ``ssn@variant``), the name in tables,
        CSV and JSON."""
        return self._trained_name + (f"@{self.variant}" if self.variant else "")

    @property
    def folder(self) -> str:
        """``label-loss`` (``label-loss@variant``; ``ssn``), the method's folder under the
        comparison's output folder: its predictions and evaluation."""
        return self._trained_name.replace(":", "-") + (f"@{self.variant}" if self.variant else "")

    @property
    def trained(self) -> "Method":
        """The method whose models this one predicts with (itself unless a variant)."""
        return Method(self.label_mode, self.loss, head=self.head)

    @property
    def tta(self) -> str:
        return "flip" if "tta" in self.variant.split("+") else "none"

    @property
    def temperature(self) -> bool:
        return "ts" in self.variant.split("+")

    def config(self, base: TrainConfig, seed: int) -> TrainConfig:
        """``base`` with this method's label mode, loss and head and the given seed."""
        return base.replace(label_mode=self.label_mode, loss=self.loss, head=self.head, seed=seed)


def _parse_one(spec: str) -> Method | str:
    """The method ``spec`` names, or a description of what is wrong with it."""
    trained, _, variant = str(spec).strip().partition("@")
    label, _, loss = trained.partition(":")
    loss = loss or DEFAULT_LOSS
    wrong = []
    if variant and variant not in VARIANTS:
        wrong.append(f"inference variant {variant!r} is not one of {', '.join(VARIANTS)}")
    if label == SSN:
        fixed = HEAD_DEFAULTS["ssn"]
        if loss != fixed["loss"]:
            wrong.append(f"an SSN trains on the Monte Carlo likelihood of the cross-entropy: loss "
                         f"{fixed['loss']!r} only (or none), found {loss!r}")
        if "ts" in variant.split("+"):
            wrong.append("an SSN has no temperature (its spread is learnt); use ssn or ssn@tta")
        method = Method(fixed["label_mode"], fixed["loss"], variant, head="ssn")
    else:
        if label not in LABEL_MODES:
            wrong.append(f"label mode {label!r} is not one of {', '.join(LABELS)}")
        if loss not in LOSSES:
            wrong.append(f"loss {loss!r} is not one of {', '.join(LOSSES)}")
        method = Method(label, loss, variant)
    return "; ".join(f"{spec!r}: {w}" for w in wrong) if wrong else method


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
            "--methods: expected LABEL[:LOSS][@VARIANT] with LABEL one of " + ", ".join(LABELS)
            + ", LOSS one of " + ", ".join(LOSSES) + f" (default {DEFAULT_LOSS}) and VARIANT one of "
            + ", ".join(VARIANTS) + ", e.g. soft:ce majority:ce+dml soft:ce@tta ssn; "
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
