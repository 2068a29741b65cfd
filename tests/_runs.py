"""Run folders for tests that need a model but no training (predict, export)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from softseg.model.config import TrainConfig, save_config, to_dict
from softseg.model.modes import model_from_config
from softseg.model.checkpoints import save_checkpoint


def make_run(run_dir: Path, in_channels: int = 1, tasks=("task01", "task02"), seed: int = 0,
             classes=()) -> Path:
    """A run folder with an untrained model whose logits are spread out (head weights x 20),
    so its probabilities cover [0, 1] rather than sitting near 0.5; ``best.pt`` and
    ``last.pt`` hold the same weights. ``classes`` (background first; ``tasks`` then the
    foreground classes) makes a multi-class (softmax) run."""
    config = TrainConfig(tasks=tuple(tasks), in_channels=in_channels, encoder_weights="none",
                         precision="fp32", seed=seed, classes=tuple(classes))
    torch.manual_seed(seed)
    model = model_from_config(config)
    with torch.no_grad():
        model.segmentation_head[0].weight.mul_(20.0)
    (run_dir / "checkpoints").mkdir(parents=True)
    save_config(config, run_dir / "config.json")
    for name in ("best", "last"):
        save_checkpoint({"model": model.state_dict(), "config": to_dict(config)},
                        run_dir / "checkpoints" / f"{name}.pt")
    (run_dir / "split.json").write_text(json.dumps({"train": [], "val": []}))
    return run_dir
