"""Small networks shared by the mechanisms: an MLP, a standardiser, and a positive scale."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MLP", "Standardizer", "positive_scale", "positive_scale_inverse"]

SOFTPLUS_ONE = 0.5413248546129181  # softplus(SOFTPLUS_ONE) = 1


def positive_scale(raw: Tensor) -> Tensor:
    """``softplus(raw + c) + 1e-4``, with ``c`` such that the scale is 1 at ``raw = 0``.

    A softplus grows linearly where a network extrapolates linearly (an exponential would not).
    """
    return torch.nn.functional.softplus(raw + SOFTPLUS_ONE) + 1e-4


def positive_scale_inverse(scale: Tensor) -> Tensor:
    """The ``raw`` with ``positive_scale(raw) = scale`` (``scale`` above 1e-4; clamped there)."""
    shifted = (scale - 1e-4).clamp_min(1e-6)
    return shifted + torch.log(-torch.expm1(-shifted)) - SOFTPLUS_ONE  # log(expm1(s)), stable


class MLP(nn.Sequential):
    """A multi-layer perceptron ``(*batch, in_features) -> (*batch, out_features)``.

    Args:
        in_features: input size.
        out_features: output size.
        hidden: sizes of the hidden layers.
        activation: activation class placed after each hidden layer.
        zero_last: initialise the last layer at zero (the network starts as the constant 0).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (64, 64),
        activation: type[nn.Module] = nn.SiLU,
        zero_last: bool = False,
    ):
        layers: list[nn.Module] = []
        sizes = [in_features, *hidden]
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), activation()]
        layers.append(nn.Linear(sizes[-1], out_features))
        super().__init__(*layers)
        if zero_last:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)


class Standardizer(nn.Module):
    """Affine standardisation ``(x - loc) / scale`` with statistics set from data.

    The statistics are buffers, so they move with ``.to(device)`` and are saved with the model.
    A feature with zero spread keeps scale 1 (it is then only centred).

    Args:
        features: the size of the last dimension.
    """

    def __init__(self, features: int):
        super().__init__()
        self.register_buffer("loc", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Set the statistics from ``x``: ``(n, features)``."""
        x = x.reshape(-1, x.shape[-1]).to(self.loc)
        self.loc.copy_(x.mean(0))
        std = x.std(0) if x.shape[0] > 1 else torch.ones_like(self.loc)
        self.scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))

    def forward(self, x: Tensor) -> Tensor:
        """``(x - loc) / scale``, shapes ``(*batch, features)``."""
        return (x - self.loc) / self.scale

    def inverse(self, z: Tensor) -> Tensor:
        """``loc + scale * z``, shapes ``(*batch, features)``."""
        return self.loc + self.scale * z

    def log_scale(self) -> Tensor:
        """``sum(log scale)``: the log-determinant of :meth:`inverse`."""
        return self.scale.log().sum()
