"""Diff-SCM's image SCM: digit -> image, with a classifier-guided diffusion mechanism.

The digit is a Gumbel-max root; the image is a :class:`~pyro_scm.DiffusionMechanism` whose
unconditional ε-network is guided by a time-dependent anti-causal classifier p(digit | x_t, t)
with scale s (Algorithm 1 of Sanchez & Tsaftaris, 2022). Counterfactuals abduct the image's
noise x_T by DDIM inversion and regenerate it under the new digit.
"""

from __future__ import annotations

import pyro
from torch import nn

import pyro_scm as ps
from pyro_scm.mechanisms.diffusion import DiffusionMechanism
from pyro_scm.nets.diffusion import TimeMLP, UNet, UNetClassifier


class Flat(nn.Module):
    """Apply a vector network to flattened images: ``(B, 1, H, W)`` -> same shape or ``(B, K)``."""

    def __init__(self, net: nn.Module, image: bool):
        super().__init__()
        self.net, self.image = net, image

    def forward(self, x, t, context=None):
        out = self.net(x.flatten(1), t, context)
        return out.reshape(x.shape) if self.image else out


class DigitImage(ps.SCM):
    """digit -> image, for ``side`` x ``side`` images in [0, 1].

    Args:
        side: image side (14 or 28 on a CPU: 14).
        net: ``"unet"`` (a small UNet and UNet classifier) or ``"mlp"`` (MLPs on pixels).
        width: base width of the networks.
        scale: the guidance scale s.
        timesteps: diffusion steps T of training.
        steps: DDIM steps of generation and abduction.
    """

    def __init__(
        self,
        side: int = 14,
        net: str = "unet",
        width: int = 16,
        scale: float = 0.7,
        timesteps: int = 200,
        steps: int = 20,
    ):
        super().__init__()
        self.digit = ps.CategoricalMechanism(10)
        if net == "unet":
            eps = UNet(1, base=width, mults=(1, 2))
            clf = UNetClassifier(1, 10, base=width, mults=(1, 2))
        else:
            eps = Flat(TimeMLP(side * side, hidden=(width,) * 3, time_dim=64), True)
            clf = Flat(TimeMLP(side * side, 10, hidden=(width // 2,) * 2, time_dim=64), False)
        self.image = DiffusionMechanism(
            eps,
            (1, side, side),
            context=10,
            predictor=clf,
            guidance_scale=scale,
            timesteps=timesteps,
            beta_end=0.02 * 1000 / timesteps,
            steps=steps,
        )

    def model(self) -> None:
        """The program: the digit, then its image."""
        digit = pyro.sample("digit", self.digit())
        pyro.sample("image", self.image(digit))
