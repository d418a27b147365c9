"""Networks the metrics train for their own use: a digit classifier (effectiveness, realism), a
latent VAE (CLD) and class-wise autoencoders (IM1, IM2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .mlp import MLP

__all__ = ["ClassAutoencoders", "DigitClassifier", "LatentVAE"]


class DigitClassifier(nn.Module):
    """A small CNN ``(n, C, H, W) -> (n, num_classes)`` logits; :meth:`features` gives the
    penultimate layer ``(n, 64)`` used by :func:`realism`. Any side from 16 up works."""

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(7),
            nn.Flatten(),
            nn.Linear(2 * width * 49, 64),
            nn.SiLU(),
        )
        self.head = nn.Linear(64, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(n, 64)``."""
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)`` of images ``(B, C, H, W)``."""
        return self.head(self.body(x))


class LatentVAE(nn.Module):
    """A Gaussian MLP VAE over flattened inputs ``(n, *event)``.

    Args:
        features: the inputs' flattened size.
        latent: the latent size (the paper uses 20 on MNIST).
        hidden: hidden sizes of the encoder (reversed in the decoder).
    """

    def __init__(self, features: int, latent: int = 20, hidden: Sequence[int] = (256,)):
        super().__init__()
        self.encoder = MLP(features, 2 * latent, hidden)
        self.decoder = MLP(latent, features, tuple(reversed(hidden)))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(n, *event)`` -> mean and log-variance, each ``(n, latent)``."""
        mu, log_var = self.encoder(x.flatten(1)).chunk(2, dim=-1)
        return mu, log_var.clamp(-12, 8)

    def loss(self, x: Tensor) -> Tensor:
        """Negative ELBO per unit with a unit-variance Gaussian likelihood, ``(n,)``."""
        mu, log_var = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()
        recon = 0.5 * (self.decoder(z) - x.flatten(1)).square().sum(-1)
        kl = 0.5 * (mu.square() + log_var.exp() - 1 - log_var).sum(-1)
        return recon + kl


class _Autoencoder(nn.Module):
    def __init__(self, features: int, latent: int, hidden: Sequence[int]):
        super().__init__()
        self.encoder = MLP(features, latent, hidden)
        self.decoder = MLP(latent, features, tuple(reversed(hidden)))

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x.flatten(1))).reshape(x.shape)


class ClassAutoencoders(nn.Module):
    """One autoencoder per class and one over every class, for IM1 and IM2.

    ``reconstruct(x, k)`` reconstructs ``(n, *event)`` with the autoencoder of class ``k[i]``
    per row (``k = None``: the autoencoder of all classes).
    """

    def __init__(self, features: int, num_classes: int, latent: int = 16, hidden=(128,)):
        super().__init__()
        self.num_classes = num_classes
        self.per_class = nn.ModuleList(
            _Autoencoder(features, latent, hidden) for _ in range(num_classes)
        )
        self.all = _Autoencoder(features, latent, hidden)

    def reconstruct(self, x: Tensor, classes: Tensor | None = None) -> Tensor:
        """Reconstructions by every class's autoencoder, or by the autoencoder of ``classes``."""
        if classes is None:
            return self.all(x)
        out = torch.empty_like(x)
        for k in classes.unique().tolist():
            rows = classes == k
            out[rows] = self.per_class[k](x[rows])
        return out
