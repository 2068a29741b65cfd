"""The Stochastic Segmentation Network's distribution (Monteiro et al., NeurIPS 2020): pure math.

The network's last layer predicts, per pixel and output channel k (a task's logit, or a
class's), a logit mean ``mu``, a rank-``r`` covariance factor ``P`` and a diagonal ``D``. Over
the whole image the logits are one Gaussian ``eta ~ N(mu, P P^T + D)``: with ``n`` pixels
``P`` is ``(n, r)`` and the covariance ``(n, n)``, positive definite by construction because
``D = softplus(raw) + EPSILON > 0``. A sample is the reparameterisation
``eta = mu + P z + sqrt(D) eps`` with ``z ~ N(0, I_r)``, ``eps ~ N(0, I_n)``.

A sigmoid head has one such Gaussian per task channel (independent, each with its own ``z``);
a softmax head has one over all its classes together (``joint``: one ``z`` shared by every
class, so ``n`` is classes x pixels, as the paper models multi-class logits).

The raw network output ``(N, K * (r + 2), *spatial)`` holds, in this channel order: ``mu``
(K channels), ``P`` (K * r channels, channel ``K + k * r + j`` is column j of channel k's
factor), the raw diagonal (K channels). Everything here computes in float32 with autocast
off, whatever the caller runs under.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

# D's floor: keeps the covariance positive definite and the diagonal's square root
# differentiable where softplus underflows (the SSN paper's value)
EPSILON = 1e-5


@dataclass(frozen=True)
class LowRankLogits:
    """The logits' distribution of a batch: ``mean`` and ``diagonal`` ``(N, K, *spatial)``
    (diagonal > 0), ``factor`` ``(N, K, r, *spatial)``; ``joint``: one Gaussian over all K
    channels of an image (softmax) rather than one per channel (sigmoid)."""

    mean: torch.Tensor
    factor: torch.Tensor
    diagonal: torch.Tensor
    joint: bool

    @property
    def rank(self) -> int:
        return self.factor.shape[2]


def channels(k: int, rank: int) -> int:
    """The raw output channels of K logit channels with a rank-``rank`` factor."""
    return k * (rank + 2)


def split(raw: torch.Tensor, k: int, rank: int, joint: bool) -> LowRankLogits:
    """The distribution of raw ``(N, K * (r + 2), *spatial)`` network outputs (float32)."""
    if raw.shape[1] != channels(k, rank):
        raise ValueError(f"expected {channels(k, rank)} channels (K={k}, rank {rank}), found {raw.shape[1]}")
    raw = raw.float()
    n, spatial = raw.shape[0], raw.shape[2:]
    factor = raw[:, k : k * (rank + 1)].reshape(n, k, rank, *spatial)
    return LowRankLogits(raw[:, :k], factor, F.softplus(raw[:, k * (rank + 1):]) + EPSILON, joint)


def sample(dist: LowRankLogits, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` reparameterised samples ``(n, N, K, *spatial)`` of the logits.

    Draws ``z`` ``(n, N, 1 or K, r)`` first, then ``eps`` ``(n, N, K, *spatial)``, from
    ``generator`` (torch's global generator of the tensors' device when None): for one image
    and channel the same numbers, in the same order, as
    ``torch.distributions.LowRankMultivariateNormal.rsample((n,))``.
    """
    mean, factor = dist.mean, dist.factor
    batch, k = mean.shape[:2]
    options = {"generator": generator, "device": mean.device, "dtype": torch.float32}
    z = torch.randn((n, batch, 1 if dist.joint else k, dist.rank), **options)
    eps = torch.randn((n, *mean.shape), **options)
    flat = factor.flatten(3)  # (N, K, r, pixels)
    low_rank = torch.einsum("mbkr,bkrp->mbkp", z.expand(n, batch, k, dist.rank), flat)
    return mean + low_rank.reshape(n, *mean.shape) + dist.diagonal.sqrt() * eps


def log_likelihood(eta: torch.Tensor, target: torch.Tensor, joint: bool) -> torch.Tensor:
    """Per pixel ``log p(target | eta)`` of samples ``(M, N, K, *spatial)``: Bernoulli per
    channel (sigmoid; targets in [0, 1]) or categorical over the K channels (softmax; targets
    a class distribution per pixel, one-hot for a rater's map). Shape ``(M, N, K, *spatial)``
    (sigmoid) or ``(M, N, *spatial)`` (softmax)."""
    target = target.float()[None].expand_as(eta)
    if joint:
        return (target * F.log_softmax(eta, dim=2)).sum(2)
    return -F.binary_cross_entropy_with_logits(eta, target, reduction="none")


def mc_nll(raw: torch.Tensor, target: torch.Tensor, k: int, rank: int, samples: int,
           joint: bool) -> torch.Tensor:
    """The SSN's loss: ``-log (1/M) sum_m prod_pixels p(target | eta_m)`` over ``M = samples``
    reparameterised samples, by log-sum-exp, per image (and per task channel of a sigmoid
    head), divided by its pixel count and averaged over the batch (and tasks).

    Dividing by the pixels puts it on the scale of the mean cross-entropy: with ``P = 0`` and
    ``D -> 0`` every sample is ``mu`` and the loss is ``F.binary_cross_entropy_with_logits(mu,
    target)`` (softmax: ``F.cross_entropy``). ``raw`` ``(N, K * (r + 2), *spatial)``, ``target``
    ``(N, K, *spatial)``. Samples come from torch's global generator: the caller seeds it.
    """
    with torch.autocast(device_type=raw.device.type, enabled=False):
        dist = split(raw, k, rank, joint)
        per_pixel = log_likelihood(sample(dist, samples), target, joint)
        # summed over an image's pixels (and, joint, its classes): (M, N) or (M, N, K)
        totals = per_pixel.flatten(2 if joint else 3).sum(-1)
        log_mean = torch.logsumexp(totals, dim=0) - math.log(samples)
        pixels = math.prod(raw.shape[2:])
        return -(log_mean / pixels).mean()


def sampled_probabilities(raw: torch.Tensor, k: int, rank: int, joint: bool, n: int, seed: int,
                          activation: Callable[[torch.Tensor], torch.Tensor], *,
                          mean: bool) -> torch.Tensor:
    """``activation(eta_s)`` of ``n`` samples per image: their mean ``(N, K, *spatial)`` with
    ``mean``, else all of them ``(N, n, K, *spatial)``.

    Each image draws from its own generator seeded with ``seed``, one sample after the other,
    so an image's samples do not depend on the batch it came in, and the first samples of a
    mean over more are the samples themselves (``activation`` acts on ``(K, *spatial)``).
    """
    with torch.autocast(device_type=raw.device.type, enabled=False):
        dist = split(raw, k, rank, joint)
        out = []
        for b in range(raw.shape[0]):
            one = LowRankLogits(dist.mean[b : b + 1], dist.factor[b : b + 1], dist.diagonal[b : b + 1], joint)
            generator = torch.Generator(device=raw.device).manual_seed(seed)
            draws = (activation(sample(one, 1, generator)[0, 0]) for _ in range(n))
            out.append(sum(draws) / n if mean else torch.stack(list(draws)))
        return torch.stack(out)
