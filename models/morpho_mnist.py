"""The Morpho-MNIST SCM (Pawlowski et al. 2020; DeepBC § 4.1) as a Pyro program.

    thickness ~ flow()                       (a root)
    intensity ~ flow(thickness)
    digit     ~ Gumbel-max over 10 classes   (a root, independent of t and i)
    image     ~ conditional β-VAE(thickness, intensity, digit)     (``image="vae"``, default)
              | hierarchical VAE, parents at every level            (``image="hvae"``)
              | conditional diffusion with classifier-free guidance (``image="diffusion"``)

Images are ``(1, 28, 28)`` (or 32×32) with values in [0, 1]; thickness in pixels and intensity
on the 0–255 scale of :func:`pyro_scm.datasets.morpho_mnist.measure_intensity`; the digit is
one-hot (data may give class indices). Built on the data set of
:mod:`pyro_scm.datasets.morpho_mnist`.

Example:
    >>> from pyro_scm.models.morpho_mnist import train
    >>> scm, data, history = train(quick=True, progress=False)   # doctest: +SKIP
    >>> cf = scm.counterfactual(data.subset(range(8)).to_dict(), do={"thickness": 4.0})  # +SKIP
    >>> cf["image"].shape                                          # doctest: +SKIP
    torch.Size([1, 8, 1, 28, 28])
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd
import pyro
import torch
import zuko

import pyro_scm as ps
from pyro_scm.datasets.morpho_mnist import MorphoMNIST as MorphoMNISTData
from pyro_scm.datasets.morpho_mnist import load_morpho_mnist
from pyro_scm.mechanisms.vae import VAEMechanism

__all__ = [
    "BEST_IMAGE",
    "IMAGE_MECHANISMS",
    "MorphoMNIST",
    "TrainConfig",
    "morpho_mnist_data",
    "train",
]

NUM_DIGITS = 10
IMAGE_MECHANISMS = ("vae", "hvae", "diffusion")
"""The image mechanisms :class:`MorphoMNIST` can use."""
BEST_IMAGE = "vae+res"
"""The best image mechanism by ``benchmarks/image_benchmark.py`` (docs/image-benchmark.md):
a kind of :data:`IMAGE_MECHANISMS`, ``+res`` when counterfactuals keep the decoder residual."""


class MorphoMNIST(ps.SCM):
    """thickness → intensity; (thickness, intensity, digit) → image.

    Args:
        size: image side, 28 or 32.
        latent_dim: size of the VAE's z.
        width: channels of the VAE's first convolution.
        beta: weight of the KL term.
        residual: keep the decoder residual in the image's noise (exact factual reconstruction;
            counterfactuals change the decoder mean only) instead of the encoder mean alone.
        abduction: ``"mean"`` or ``"sample"`` (draws from q(z | x, pa)).
        image: the image mechanism, one of :data:`IMAGE_MECHANISMS`.
    """

    def __init__(
        self,
        size: int = 28,
        latent_dim: int = 16,
        width: int = 32,
        beta: float = 1.0,
        residual: bool = False,
        abduction: str = "mean",
        image: str = "vae",
    ):
        super().__init__()
        if image not in IMAGE_MECHANISMS:
            raise ps.errors.MechanismError(
                f"image must be one of {IMAGE_MECHANISMS}, got {image!r}"
            )
        self.thickness = ps.FlowMechanism(zuko.flows.NSF(features=1, context=0))
        self.intensity = ps.FlowMechanism(zuko.flows.NSF(features=1, context=1))
        self.digit = ps.CategoricalMechanism(NUM_DIGITS)
        if image != "vae":
            self.image = _image_mechanism(image, size, latent_dim, width, beta, residual)
            return
        self.image = VAEMechanism.conv(
            size,
            1,
            latent_dim,
            context=2 + NUM_DIGITS,
            width=width,
            beta=beta,
            residual=residual,
            abduction=abduction,
            name="image",
        )

    def model(self) -> None:
        t = pyro.sample("thickness", self.thickness())
        i = pyro.sample("intensity", self.intensity(t))
        d = pyro.sample("digit", self.digit())
        pyro.sample("image", self.image(t, i, d))


# --- other image mechanisms (issue 14) -------------------------------------------------------


def _image_mechanism(kind: str, size: int, latent_dim: int, width: int, beta: float, residual):
    """The HVAE or the conditional diffusion image mechanism at CPU scale."""
    context = 2 + NUM_DIGITS
    if kind == "hvae":
        return ps.HVAEMechanism.conv(
            size, 1, context, width=width, latent=latent_dim, beta=beta, residual=residual,
            name="image",
        )  # fmt: skip
    from pyro_scm.nets.diffusion import UNet

    return ps.DiffusionMechanism(
        UNet(1, base=width, mults=(1, 2), context=context),
        (1, size, size),
        context=context,
        cond_drop=0.1,
        timesteps=200,
        beta_end=0.1,
        steps=25,
    )


# ---------------------------------------------------------------------------------------------


def morpho_mnist_data(n: int = 2000, seed: int = 0, size: int = 28) -> MorphoMNISTData:
    """Morpho-MNIST units for this model; ``.to_dict()`` is its training data.

    Returns:
        a :class:`pyro_scm.datasets.morpho_mnist.MorphoMNIST`: ``to_dict()`` gives thickness,
        intensity ``(n,)``, digit ``(n,)`` class indices and image ``(n, 1, size, size)`` in
        [0, 1]; ``split``, ``subset`` and the true noises come with it.
    """
    return load_morpho_mnist(n=n, seed=seed, size=size)


@dataclass(frozen=True)
class TrainConfig:
    """Sizes of a training run; :func:`train` picks ``QUICK`` or ``DEFAULT``."""

    n: int
    epochs: int
    latent_dim: int
    width: int
    batch_size: int = 64
    lr: float = 1e-3


DEFAULT = TrainConfig(n=2000, epochs=20, latent_dim=16, width=32)
QUICK = TrainConfig(n=600, epochs=6, latent_dim=8, width=16)
CONFIGS = {  # (default, quick) per image mechanism
    "vae": (DEFAULT, QUICK),
    "hvae": (
        TrainConfig(n=2000, epochs=20, latent_dim=16, width=16, lr=2e-3),
        TrainConfig(n=600, epochs=6, latent_dim=8, width=8, lr=2e-3),
    ),
    "diffusion": (
        TrainConfig(n=2000, epochs=20, latent_dim=0, width=16, lr=2e-3),
        TrainConfig(n=600, epochs=6, latent_dim=0, width=8, lr=2e-3),
    ),
}


def train(
    *,
    quick: bool = False,
    n: int | None = None,
    epochs: int | None = None,
    seed: int = 0,
    size: int = 28,
    residual: bool = False,
    beta: float = 1.0,
    data: MorphoMNISTData | None = None,
    progress: bool = True,
    trainer: object = None,
    image: str = "vae",
) -> tuple[MorphoMNIST, MorphoMNISTData, pd.DataFrame]:
    """Build Morpho-MNIST, and fit the SCM on it (CPU: about a minute; ``quick``: seconds).

    Args:
        quick: a small run (600 units, 6 epochs, a smaller VAE) for tests and smoke runs.
        n: units to generate (overrides the preset; ignored when ``data`` is given).
        epochs: the most epochs (overrides the preset).
        seed: seed of the data and of the training.
        size: image side, 28 or 32.
        residual, beta: see :class:`MorphoMNIST`.
        data: train on these units instead of generating them.
        progress: show tqdm progress bars.
        trainer: train on this ``lightning.Trainer`` (its ``max_epochs`` and progress bar).
        image: the image mechanism (:data:`IMAGE_MECHANISMS`), each with its own preset.

    Returns:
        ``(scm, data, history)``: the fitted model (eval mode), the units it was trained on,
        and the history of :func:`pyro_scm.fitting.fit` (with ``attrs["seconds"]``).
    """
    if image not in CONFIGS:
        raise ps.errors.MechanismError(f"image must be one of {IMAGE_MECHANISMS}, got {image!r}")
    config = CONFIGS[image][1 if quick else 0]
    torch.manual_seed(seed)
    if data is None:
        data = morpho_mnist_data(n or config.n, seed=seed, size=size)
    scm = MorphoMNIST(
        size=size,
        latent_dim=max(config.latent_dim, 1),
        width=config.width,
        beta=beta,
        residual=residual,
        image=image,
    )
    start = time.perf_counter()
    loop = {"epochs": epochs or config.epochs, "progress": progress}
    history = scm.fit(
        data.to_dict(),
        batch_size=config.batch_size,
        lr=config.lr,
        patience=5,
        seed=seed,
        **({"trainer": trainer} if trainer is not None else loop),
    )
    history.attrs["seconds"] = time.perf_counter() - start
    return scm, data, history
