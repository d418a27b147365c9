"""Small encoder and decoder networks for VAE mechanisms: convolutional for 28×28 and 32×32
images, MLPs for vectors.

Every network follows the contract :class:`~pyro_scm.mechanisms.vae.VAEMechanism` expects, so
user networks only have to do the same:

- encoder ``(x, context) -> (B, 2 * latent_dim)``: the posterior's location and log-scale,
  with ``x`` ``(B, *event)`` and ``context`` ``(B, context_features)`` or ``None``;
- decoder ``(z, context) -> (B, *event)``: the likelihood's location before the output map
  (logits for images in [0, 1], the mean itself for real vectors).

The context (the node's parents, standardised) enters after the convolutions, concatenated with
the image features in the encoder and with z in the decoder, as in DeepBC's Morpho-MNIST VAE.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ShapeError
from .mlp import MLP

__all__ = ["IMAGE_SIZES", "ConvDecoder", "ConvEncoder", "MLPDecoder", "MLPEncoder"]

IMAGE_SIZES = (28, 32)
"""Image sides the convolutional networks support (two stride-2 stages: side / 4 must be whole)."""


def _check_image(size: int, channels: int) -> None:
    if size not in IMAGE_SIZES:
        raise ShapeError(
            f"the convolutional networks take images of side {IMAGE_SIZES}, not {size}"
        )
    if channels < 1:
        raise ShapeError(f"images need at least one channel, got {channels}")


def _cat(a: Tensor, context: Tensor | None) -> Tensor:
    return a if context is None else torch.cat([a, context], dim=-1)


class ConvEncoder(nn.Module):
    """Two stride-2 convolutions and an MLP: ``(B, C, S, S), (B, k) -> (B, 2 * latent_dim)``.

    Args:
        latent_dim: size of z.
        size: image side, 28 or 32.
        channels: image channels C.
        context: size of the context vector k (0: unconditional).
        width: channels of the first convolution (the second has twice as many).
        hidden: width of the hidden linear layer.
    """

    def __init__(
        self,
        latent_dim: int,
        size: int = 28,
        channels: int = 1,
        context: int = 0,
        width: int = 32,
        hidden: int = 256,
    ):
        super().__init__()
        _check_image(size, channels)
        self.conv = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Flatten(),
        )
        features = 2 * width * (size // 4) ** 2
        self.head = MLP(features + context, 2 * latent_dim, (hidden,))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Encoder output ``(B, 2L)``: latent means and log-scales."""
        return self.head(_cat(self.conv(x), context))


class ConvDecoder(nn.Module):
    """An MLP and two stride-2 transposed convolutions: ``(B, L), (B, k) -> (B, C, S, S)`` logits.

    Args: as :class:`ConvEncoder`.
    """

    def __init__(
        self,
        latent_dim: int,
        size: int = 28,
        channels: int = 1,
        context: int = 0,
        width: int = 32,
        hidden: int = 256,
    ):
        super().__init__()
        _check_image(size, channels)
        self.shape = (2 * width, size // 4, size // 4)
        features = 2 * width * (size // 4) ** 2
        self.head = nn.Sequential(MLP(latent_dim + context, features, (hidden,)), nn.SiLU())
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1),
        )

    def forward(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Decoder output ``(B, C, S, S)`` (logits or means, by the likelihood)."""
        h = self.head(_cat(z, context))
        return self.deconv(h.reshape(-1, *self.shape))


class MLPEncoder(nn.Module):
    """``(B, d), (B, k) -> (B, 2 * latent_dim)``."""

    def __init__(
        self, features: int, latent_dim: int, context: int = 0, hidden: Sequence[int] = (64, 64)
    ):
        super().__init__()
        self.net = MLP(features + context, 2 * latent_dim, hidden)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Encoder output ``(B, 2L)``: latent means and log-scales."""
        return self.net(_cat(x, context))


class MLPDecoder(nn.Module):
    """``(B, L), (B, k) -> (B, d)``."""

    def __init__(
        self, features: int, latent_dim: int, context: int = 0, hidden: Sequence[int] = (64, 64)
    ):
        super().__init__()
        self.net = MLP(latent_dim + context, features, hidden)

    def forward(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Decoder output ``(B, *event)``."""
        return self.net(_cat(z, context))
