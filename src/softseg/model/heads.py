"""The run's output head: what its channels mean, how they become probabilities, what the loss
and the temperature act on. Decided once from the run's configuration (:func:`head_of`).

- :class:`SigmoidTasks` (binary data): one channel per task, a sigmoid each, one temperature
  per task; targets are the tasks' soft (or hard) labels.
- :class:`SoftmaxClasses` (multi-class data, ``TrainConfig.classes`` set): one channel per
  class, background first, a softmax over them, one temperature shared by the softmax; targets
  are the raters' class distributions; ``tasks`` are the foreground classes.
- :class:`StochasticSegmentation` (``TrainConfig.head`` "ssn"): either of the above whose
  logits are a low-rank Gaussian over the image (:mod:`softseg.model.ssn`); its loss is the
  Monte Carlo likelihood of a drawn rater's mask, its probabilities the mean over seeded
  samples; no temperature, no ONNX export.

A new head is one class with these methods plus its entry in :data:`HEADS` (the head there
that ``claims`` a configuration is its head); training, validation, prediction,
calibration and export ask the head.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import numpy as np
import torch

from softseg.errors import SoftsegError
from softseg.model import ssn
from softseg.model.losses import loss_function

if TYPE_CHECKING:
    from softseg.data.cases import Case
    from softseg.model.config import TrainConfig


class Head(Protocol):
    """The interface every head implements (see the module doc)."""

    name: str

    @staticmethod
    def claims(config: TrainConfig) -> bool:
        """Whether a run with ``config`` has this head."""
        ...

    #: how ``calibrate`` describes the temperature it fits, and what that fit minimises
    temperature_method: str
    temperature_objective: str
    #: what an exported ONNX model's output holds (softseg.inference.export), up to its seed count
    exported_values: str
    #: one probability map per task and nothing else (what the QUBIQ submission layout holds)
    one_map_per_task: bool
    #: whether the head draws samples of its segmentation (:meth:`samples`)
    sampling: bool

    def outputs(self, config: TrainConfig) -> tuple[str, ...]:
        """The probability maps' channels by name (those of the deterministic heads' network)."""
        ...

    def channels(self, config: TrainConfig) -> int:
        """How many output channels the network has (the logits :meth:`probabilities` takes)."""
        ...

    def samples(self, logits: torch.Tensor, n: int) -> torch.Tensor:
        """``n`` sampled probability maps ``(N, n, K, *spatial)`` of ``(N, channels, *spatial)``
        logits (a sampling head's; SoftsegError for the others)."""
        ...

    def check_temperature(self, run_dir) -> None:
        """Raise SoftsegError when temperature scaling does not apply to this head."""
        ...

    def check_export(self, run_dir) -> None:
        """Raise SoftsegError when this head's prediction is not one ONNX forward pass."""
        ...

    def task_channels(self) -> slice:
        """Where the run's ``tasks`` sit among its output channels."""
        ...

    def probabilities(self, logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Probabilities from logits (``dim``: the channel axis)."""
        ...

    def temperature_divisor(self, temperatures: Sequence[float], spatial: int,
                            device: torch.device | str) -> torch.Tensor:
        """The run's temperatures shaped to divide ``(..., K, *spatial)`` logits."""
        ...

    def loss_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Augmented ``(N, K, *spatial)`` targets in the form the loss expects."""
        ...

    def loss(self, config: TrainConfig, batch_sum: Callable | None = None) -> Callable:
        """The run's loss ``(logits, targets) -> scalar``; ``batch_sum`` sums over DDP processes."""
        ...

    def targets(self, case: Case, config: TrainConfig, label_mode: str) -> np.ndarray:
        """``(K, *spatial)`` float32 training targets of ``case`` under ``label_mode`` (the
        random-rater mode draws per step from :meth:`rater_masks`; here it is the soft label)."""
        ...

    def rater_masks(self, case: Case, config: TrainConfig) -> list[torch.Tensor]:
        """The raters' masks a random-rater run draws from, as float32 tensors."""
        ...

    def draw_rater(self, masks: Sequence[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """One draw of :meth:`rater_masks`: a ``(K, *spatial)`` target."""
        ...

    def fit_temperatures(self, pairs, config: TrainConfig) -> dict[str, dict]:
        """Per task: the temperature fitted on ``(case, logits (K, *spatial))`` pairs and the
        calibration before and after (see :mod:`softseg.model.temperature`)."""
        ...


class _Deterministic:
    """What the deterministic heads share: one logit per output channel."""

    sampling = False

    def channels(self, config: TrainConfig) -> int:
        return len(self.outputs(config))

    def samples(self, logits, n):
        raise SoftsegError(f"a {self.name} head predicts one map, not samples; sampling needs head ssn")

    def check_temperature(self, run_dir):
        return None

    def check_export(self, run_dir):
        return None


class SigmoidTasks(_Deterministic):
    name = "sigmoid"
    temperature_method = "sigmoid(logit / T)"
    temperature_objective = "mean soft binary cross-entropy of sigmoid(logit / T) against the soft label"
    one_map_per_task = True
    exported_values = ("probabilities in [0, 1] (sigmoid of the logits divided by the temperature of "
                       "each seed and task where listed under 'temperatures'")

    def __init__(self, config: TrainConfig | None = None):
        pass  # nothing of the configuration to keep

    @staticmethod
    def claims(config: TrainConfig) -> bool:
        return config.head == "deterministic" and not config.classes

    def outputs(self, config: TrainConfig) -> tuple[str, ...]:
        return tuple(config.tasks)

    def task_channels(self) -> slice:
        return slice(None)

    def probabilities(self, logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
        return torch.sigmoid(logits)

    def temperature_divisor(self, temperatures, spatial, device):
        return torch.tensor(list(temperatures), dtype=torch.float32, device=device).reshape(-1, *([1] * spatial))

    def loss_targets(self, labels: torch.Tensor) -> torch.Tensor:
        return labels

    def loss(self, config: TrainConfig, batch_sum: Callable | None = None) -> Callable:
        return loss_function(config.loss, config.dml_weight, False, batch_sum)

    def targets(self, case: Case, config: TrainConfig, label_mode: str) -> np.ndarray:
        from softseg.data import labels

        one = {"majority": labels.majority_label, "staple": labels.staple_label}.get(label_mode, labels.soft_label)
        return np.stack([one(case, task) for task in config.tasks]).astype(np.float32)

    def rater_masks(self, case: Case, config: TrainConfig) -> list[torch.Tensor]:
        from softseg.errors import SoftsegError

        per_task = []
        for task in config.tasks:
            if task not in case.masks:
                raise SoftsegError(
                    f"{case.case_id}: task {task} has no individual rater masks (agreement-map "
                    f"data); label_mode 'random_rater' needs them; use 'soft' or 'majority'"
                )
            per_task.append(torch.from_numpy(np.asarray(case.masks[task], dtype=np.float32)))
        return per_task

    def draw_rater(self, masks, generator):
        # one rater per task, drawn from that task's own raters
        return torch.stack([m[int(torch.randint(0, m.shape[0], (1,), generator=generator))] for m in masks])

    def fit_temperatures(self, pairs, config: TrainConfig) -> dict[str, dict]:
        from softseg.data.labels import soft_label
        from softseg.model.temperature import fitted_entry

        logits: dict[str, list[np.ndarray]] = {task: [] for task in config.tasks}
        soft: dict[str, list[np.ndarray]] = {task: [] for task in config.tasks}
        for case, z in pairs:
            for index, task in enumerate(config.tasks):
                logits[task].append(z[index].ravel())
                soft[task].append(np.asarray(soft_label(case, task), dtype=np.float32).ravel())
        return {task: fitted_entry(np.concatenate(logits[task]), np.concatenate(soft[task]))
                for task in config.tasks}


class SoftmaxClasses(_Deterministic):
    name = "softmax"
    temperature_method = "softmax(logits / T), one T for all classes"
    temperature_objective = ("mean soft cross-entropy of softmax(logits / T) against the raters' class "
                             "distribution")
    one_map_per_task = False  # a map per class, background included, and a label map
    exported_values = ("probabilities in [0, 1] per class in 'classes' order, summing to 1 (softmax of the "
                       "logits divided by each seed's temperature where listed under 'temperatures'")

    def __init__(self, config: TrainConfig | None = None):
        self._n_classes = len(config.classes) if config is not None else 0

    @staticmethod
    def claims(config: TrainConfig) -> bool:
        return config.head == "deterministic" and bool(config.classes)

    def outputs(self, config: TrainConfig) -> tuple[str, ...]:
        return tuple(config.classes)

    def task_channels(self) -> slice:
        return slice(1, None)  # after the background channel

    def probabilities(self, logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=dim)

    def temperature_divisor(self, temperatures, spatial, device):
        # every foreground class records the one shared T
        return torch.tensor(list(temperatures)[:1], dtype=torch.float32, device=device).reshape(-1, *([1] * spatial))

    def loss_targets(self, labels: torch.Tensor) -> torch.Tensor:
        return as_class_distribution(labels)

    def loss(self, config: TrainConfig, batch_sum: Callable | None = None) -> Callable:
        return loss_function(config.loss, config.dml_weight, True, batch_sum)

    def targets(self, case: Case, config: TrainConfig, label_mode: str) -> np.ndarray:
        from softseg.data import labels

        one = {"majority": labels.majority_classes, "staple": labels.staple_classes}.get(
            label_mode, labels.class_distribution)
        return one(case, config.classes)

    def rater_masks(self, case: Case, config: TrainConfig) -> list[torch.Tensor]:
        """One ``(R * C, *spatial)`` tensor of the raters' one-hot class maps (rater r in rows
        r*C .. r*C + C - 1), so one draw picks one rater for every class; stored flat so that
        resizing and slicing treat it like any channels."""
        from softseg.data.labels import one_hot, rater_class_maps

        maps = rater_class_maps(case, config.classes)
        return [torch.from_numpy(np.concatenate([one_hot(m, len(config.classes)) for m in maps]))]

    def draw_rater(self, masks, generator):
        (flat,) = masks
        n_classes = self._n_classes
        r = int(torch.randint(0, flat.shape[0] // n_classes, (1,), generator=generator))
        return flat[r * n_classes:(r + 1) * n_classes]

    def fit_temperatures(self, pairs, config: TrainConfig) -> dict[str, dict]:
        from softseg.data.labels import class_distribution
        from softseg.model.temperature import fitted_class_entries

        classes = config.classes
        logits, dist = [], []
        for case, z in pairs:
            logits.append(z.reshape(len(classes), -1))
            dist.append(class_distribution(case, classes).reshape(len(classes), -1))
        return fitted_class_entries(np.concatenate(logits, axis=1).astype(np.float64),
                                    np.concatenate(dist, axis=1), classes)


class StochasticSegmentation:
    """A Stochastic Segmentation Network (Monteiro et al. 2020) over the sigmoid or softmax head
    of the data: the network predicts each logit channel's mean, rank-r factor and diagonal
    (:mod:`softseg.model.ssn`); targets, rater draws and the maps' names are the underlying
    head's. Probabilities are the mean of the activation over ``ssn_eval_samples`` samples
    drawn from a generator seeded with the run's seed (deterministic, per image)."""

    name = "ssn"
    sampling = True
    temperature_method = temperature_objective = "none (a Stochastic Segmentation Network's spread is its calibration)"
    exported_values = "none (an SSN run is not exported)"

    def __init__(self, config: TrainConfig):
        # the data's own head decides targets, draws and names: the one head_of gives without SSN
        self._base = head_of(config.replace(head="deterministic"))
        self._k = len(self._base.outputs(config))
        self._joint = bool(config.classes)  # a softmax's classes share one Gaussian
        self._rank, self._train_samples = config.ssn_rank, config.ssn_samples
        self._eval_samples, self._seed = config.ssn_eval_samples, config.seed
        self.one_map_per_task = self._base.one_map_per_task

    @staticmethod
    def claims(config: TrainConfig) -> bool:
        return config.head == "ssn"

    def outputs(self, config: TrainConfig) -> tuple[str, ...]:
        return self._base.outputs(config)

    def channels(self, config: TrainConfig) -> int:
        return ssn.channels(self._k, self._rank)

    def task_channels(self) -> slice:
        return self._base.task_channels()

    def _sampled(self, logits: torch.Tensor, n: int, mean: bool) -> torch.Tensor:
        return ssn.sampled_probabilities(logits, self._k, self._rank, self._joint, n, self._seed,
                                         lambda eta: self._base.probabilities(eta, dim=0), mean=mean)

    def probabilities(self, logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
        if dim not in (0, 1):
            raise ValueError(f"an SSN's logits have their channels on axis 0 or 1, not {dim}")
        batched = logits if dim == 1 else logits[None]
        prob = self._sampled(batched, self._eval_samples, mean=True)
        return prob if dim == 1 else prob[0]

    def samples(self, logits: torch.Tensor, n: int) -> torch.Tensor:
        return self._sampled(logits, n, mean=False)

    def temperature_divisor(self, temperatures, spatial, device):
        raise SoftsegError(self._no_temperature("a temperature.json"))

    def check_temperature(self, run_dir):
        raise SoftsegError(self._no_temperature(str(run_dir)))

    @staticmethod
    def _no_temperature(what: str) -> str:
        return (f"{what}: an SSN run (head ssn) has no temperature: its probability map is the mean over "
                "sampled logits whose spread was fitted to the raters, and temperature scaling divides "
                "one logit per pixel; predict it without --temperature / @ts, or calibrate a deterministic run")

    def check_export(self, run_dir):
        raise SoftsegError(
            f"{run_dir}: an SSN run (head ssn) predicts the mean over seeded Monte Carlo samples of "
            "its logits, which one deterministic ONNX forward pass does not hold; predict it with "
            "softseg predict (--samples N writes its samples)"
        )

    def loss_targets(self, labels: torch.Tensor) -> torch.Tensor:
        return self._base.loss_targets(labels)

    def loss(self, config: TrainConfig, batch_sum: Callable | None = None) -> Callable:
        # per image: no batch sums to complete over DDP processes (batch_sum unused)
        def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return ssn.mc_nll(logits, targets, self._k, self._rank, self._train_samples, self._joint)

        return loss

    def targets(self, case: Case, config: TrainConfig, label_mode: str) -> np.ndarray:
        return self._base.targets(case, config, label_mode)

    def rater_masks(self, case: Case, config: TrainConfig) -> list[torch.Tensor]:
        return self._base.rater_masks(case, config)

    def draw_rater(self, masks, generator):
        return self._base.draw_rater(masks, generator)

    def fit_temperatures(self, pairs, config: TrainConfig) -> dict[str, dict]:
        raise SoftsegError(self._no_temperature("calibrate"))


def as_class_distribution(labels: torch.Tensor) -> torch.Tensor:
    """Multi-class targets ``(N, C, *spatial)`` renormalised to sum to 1 per pixel after
    cropping and warping (bilinear weights keep the sum up to rounding); a pixel with no
    class at all (zero padding of an image smaller than the crop) becomes background, as the
    binary targets' padding is background."""
    total = labels.sum(1, keepdim=True)
    empty = total <= 1e-6
    background = torch.zeros_like(labels)
    background[:, :1] = 1.0
    labels = torch.where(empty, background, labels)
    return labels / torch.where(empty, torch.ones_like(total), total)


#: every head by name; exactly one claims any configuration
HEADS: dict[str, type] = {cls.name: cls for cls in (StochasticSegmentation, SoftmaxClasses, SigmoidTasks)}


def head_of(config: TrainConfig) -> Head:
    """The head of a run, the one place that decides it: the one of :data:`HEADS` that
    claims ``config`` (an SSN for ``config.head`` "ssn", else a softmax over
    ``config.classes`` for multi-class data, else a sigmoid per task)."""
    head = next((cls(config) for cls in HEADS.values() if cls.claims(config)), None)
    if head is None:
        raise SoftsegError(f"head {config.head!r}: no head predicts it; expected deterministic or ssn")
    return head
