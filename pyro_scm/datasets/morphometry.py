"""Morpho-MNIST's morphometry (Castro et al. 2019) on real digits: measure a digit's stroke
thickness and intensity, and re-draw it to a target thickness (dilation or erosion at 4×
resolution) or intensity. Pixel values are in [0, 255]; the measurements are the oracle that
scores image counterfactuals."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import DataError, NonFiniteError, ShapeError
from .mnist_files import _ndimage, _require, _skeletonize

__all__ = ["measure_intensity", "measure_thickness", "set_intensity", "set_thickness"]

SCALE = 4
"""Upscale factor of the binarised digit for measuring and re-drawing (Morpho-MNIST's 4×)."""

_CHUNK = 256  # images processed at once at 4× resolution: bounds memory
_PIXEL_TOL = 1e-3
_INTENSITY_STEPS = 8  # tolerance of the [0, 255] range check


# --------------------------------------------------------------------------- validation


def _as_images(images: Tensor | np.ndarray, name: str = "images", single: bool = False) -> Tensor:
    """Images ``(n, H, W)`` or ``(n, 1, H, W)`` (or ``(H, W)`` if ``single``) as float64
    ``(n, H, W)`` on the CPU, checked finite and in [0, 255]."""
    if isinstance(images, np.ndarray):
        if images.dtype.kind not in "biuf":
            raise DataError(f"{name}: expected a real-valued array, got dtype {images.dtype}")
        images = torch.tensor(images, dtype=torch.float64)  # a copy: read-only arrays are fine
    if not isinstance(images, Tensor):
        raise DataError(f"{name}: expected a torch.Tensor or numpy array, got {type(images)}")
    if images.is_complex():
        raise DataError(f"{name}: expected real values, got dtype {images.dtype}")
    x = images.detach().to("cpu", torch.float64)
    if single and x.dim() == 2:
        x = x[None]
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3 or x.shape[0] == 0 or min(x.shape[1:]) < 2:
        allowed = "(H, W), " if single else ""
        raise ShapeError(
            f"{name}: expected a non-empty batch of shape {allowed}(n, H, W) or (n, 1, H, W), "
            f"got {tuple(images.shape)}"
        )
    if not torch.isfinite(x).all():
        raise NonFiniteError(f"{name}: contains NaN or infinity")
    if x.min() < -_PIXEL_TOL or x.max() > 255 + _PIXEL_TOL:
        raise DataError(
            f"{name}: pixel values must be in [0, 255] (got [{x.min():.4g}, {x.max():.4g}]); "
            "multiply images in [0, 1] by 255 and clamp model outputs first"
        )
    return x


def _as_targets(values: Tensor | np.ndarray | float, n: int, name: str, upper: float) -> Tensor:
    """A scalar or ``(n,)`` of targets in (0, upper] as float64 ``(n,)``."""
    t = torch.as_tensor(values).detach().to("cpu", torch.float64).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    if t.shape != (n,):
        raise ShapeError(f"{name}: expected a scalar or {n} values, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise NonFiniteError(f"{name}: contains NaN or infinity")
    if (t <= 0).any() or (t > upper).any():
        raise DataError(f"{name}: values must be in (0, {upper}], got [{t.min()}, {t.max()}]")
    return t.clone()


def _like(values: Tensor, reference: Tensor | np.ndarray) -> Tensor:
    """``values`` in the reference's float dtype and device (default dtype for numpy/integers)."""
    if isinstance(reference, Tensor):
        dtype = reference.dtype if reference.is_floating_point() else torch.get_default_dtype()
        return values.to(reference.device, dtype)
    return values.to(torch.get_default_dtype())


def _restore_shape(x: Tensor, reference: Tensor | np.ndarray) -> Tensor:
    """``x`` of shape ``(n, H, W)`` reshaped to the reference's shape, dtype and device."""
    return _like(x.reshape(tuple(reference.shape)), reference)


# --------------------------------------------------------------------------- measurement


def _threshold(x: Tensor) -> Tensor:
    """Per-image 50% min–max threshold ``(n, 1, 1)`` of images ``(n, H, W)``."""
    low, high = x.amin((1, 2), keepdim=True), x.amax((1, 2), keepdim=True)
    return low + 0.5 * (high - low)


def _blank(x: Tensor) -> Tensor:
    """Which images ``(n, H, W)`` are constant (no foreground): ``(n,)`` bool."""
    return x.amax((1, 2)) == x.amin((1, 2))


def _hires_binary(x: Tensor) -> np.ndarray:
    """Images ``(n, H, W)`` upscaled ×SCALE (bicubic), binarised at their own 50% threshold and
    padded by one background pixel: ``(n, SCALE·H + 2, SCALE·W + 2)`` bool."""
    up = F.interpolate(x[:, None].float(), scale_factor=SCALE, mode="bicubic", align_corners=False)
    binary = (up[:, 0] >= _threshold(x).float()) & ~_blank(x)[:, None, None]
    return np.pad(binary.numpy(), ((0, 0), (1, 1), (1, 1)))


def _chunked(function: Callable[..., Tensor], *batches: Tensor) -> Tensor:
    """``function`` applied to matching chunks of ``batches`` (bounds memory at 4×), concatenated.

    A plain loop: scipy's distance transform and skimage's skeletonize hold the GIL, so threads
    would not help.
    """
    chunks = zip(*(torch.split(batch, _CHUNK) for batch in batches), strict=True)
    return torch.cat([function(*chunk) for chunk in chunks])


def _skeleton_depth(binary: np.ndarray, skeleton: np.ndarray) -> np.ndarray:
    """Distance transform of a padded binary image at its skeleton pixels only.

    The background pixel nearest to a foreground pixel always touches the foreground (else its
    neighbour towards that pixel would be nearer), so a k-d tree over those touching pixels
    gives the exact Euclidean distance transform, at a fraction of the cost of the full one.
    """
    touching = np.zeros_like(binary)
    touching[1:] |= binary[:-1]
    touching[:-1] |= binary[1:]
    touching[:, 1:] |= binary[:, :-1]
    touching[:, :-1] |= binary[:, 1:]
    tree = _require("scipy.spatial", "scipy").cKDTree(np.argwhere(touching & ~binary))
    return tree.query(np.argwhere(skeleton))[0]


def _binary_thickness(binary: np.ndarray) -> float:
    """Thickness in original pixels of one padded hi-res binary digit; NaN if it is empty."""
    if not binary.any():
        return math.nan
    return 2.0 * float(_skeleton_depth(binary, _skeletonize()(binary)).mean()) / SCALE


def _thickness_chunk(x: Tensor) -> Tensor:
    """Mean thickness ``(n,)`` float64 of images ``(n, H, W)``; NaN for blank images."""
    return torch.tensor([_binary_thickness(binary) for binary in _hires_binary(x)])


def measure_thickness(images: Tensor | np.ndarray) -> Tensor:
    """Mean stroke thickness of each digit in pixels, as in Morpho-MNIST (Castro et al. 2019).

    Each image is upscaled ×4 (bicubic), binarised at its 50% min–max threshold and skeletonised;
    the thickness is twice the mean Euclidean distance transform on the skeleton, divided by 4.

    Args:
        images: ``(n, H, W)`` or ``(n, 1, H, W)``, pixel values in [0, 255] (torch or numpy).

    Returns:
        ``(n,)`` thickness in pixels (MNIST digits: about 1–7.5, mean 2.5); NaN for a blank
        image. Float dtype and device of ``images`` (the default dtype for numpy input).

    Raises:
        ShapeError, NonFiniteError, DataError: bad images (see :func:`measure_intensity`).

    Example:
        >>> from pyro_scm.datasets import load_mnist_digits
        >>> digits, _ = load_mnist_digits()
        >>> measure_thickness(digits[:3]).shape
        torch.Size([3])
    """
    x = _as_images(images)
    return _like(_chunked(_thickness_chunk, x), images)


def _foreground_median(x: Tensor) -> Tensor:
    """Median ``(n,)`` of the pixels at or above the 50% min–max threshold; NaN for blank images."""
    foreground = torch.where(x >= _threshold(x), x, math.nan).flatten(1).numpy()
    median = torch.from_numpy(np.nanmedian(foreground, axis=1))
    return median.masked_fill(_blank(x), math.nan)


def measure_intensity(images: Tensor | np.ndarray) -> Tensor:
    """Intensity of each digit: the median of its foreground pixels (those at or above the 50%
    min–max threshold of the image), as in Morpho-MNIST and deepscm.

    Args:
        images: ``(n, H, W)`` or ``(n, 1, H, W)``, pixel values in [0, 255] (torch or numpy).

    Returns:
        ``(n,)`` intensity in [0, 255]; NaN for a blank image. Float dtype and device of
        ``images`` (the default dtype for numpy input).

    Raises:
        ShapeError: not a non-empty batch ``(n, H, W)`` / ``(n, 1, H, W)``.
        NonFiniteError: NaN or infinite pixels.
        DataError: not a real tensor/array, or pixels outside [0, 255].
    """
    return _like(_foreground_median(_as_images(images)), images)


# --------------------------------------------------------------------------- re-drawing


def _analyse(binary: np.ndarray) -> tuple[float, np.ndarray]:
    """Thickness (original pixels) and signed distance (hi-res pixels) of one padded binary
    digit: the distance is negative inside, positive outside, and the boundary lies half a pixel
    from the pixel centres."""
    edt = _ndimage().distance_transform_edt
    distance = np.where(binary, 0.5 - edt(binary), edt(~binary) - 0.5)
    return _binary_thickness(binary), distance


def _render(distance: Tensor, radius: Tensor) -> Tensor:
    """The digit dilated (radius > 0) or eroded (radius < 0) by a disk, downscaled: ``(n, H, W)``
    in [0, 1].

    Dilation by a disk of radius r is the set of points within r of the digit, erosion the set of
    points farther than r from the background: with the signed distance ``(n, 4H + 2, 4W + 2)``
    both are ``distance <= r`` (r in hi-res pixels), exact for any real r. Each hi-res pixel gets
    its covered fraction (anti-aliasing) and the image is averaged back down ×4.
    """
    coverage = (0.5 + radius[:, None, None] - distance).clamp(0.0, 1.0)[:, 1:-1, 1:-1]
    return F.avg_pool2d(coverage[:, None], SCALE)[:, 0]


def _set_thickness_chunk(x: Tensor, target: Tensor, refine_steps: int) -> Tensor:
    """Images ``(n, H, W)`` re-drawn to thickness ``target`` ``(n,)``: ``(n, H, W)`` in [0, 255].

    The first drawing dilates by the measured shortfall; each refinement corrects the radius by
    the remaining error. The measure is not monotone in the radius (closing loops, vanishing
    strokes), so each unit keeps its drawing whose measured thickness came closest.
    """
    thickness, distance = zip(*(_analyse(binary) for binary in _hires_binary(x)), strict=True)
    thickness, distance = torch.tensor(thickness), torch.from_numpy(np.stack(distance))
    radius = SCALE * (target - thickness) / 2.0  # dilating by r thickens a stroke by 2r
    best, best_error = None, torch.full_like(target, math.inf)
    for _ in range(refine_steps + 1):
        drawn = 255.0 * _render(distance, radius)
        error = target - _thickness_chunk(drawn)
        better = error.abs() < best_error  # False where the digit vanished (NaN)
        best = drawn if best is None else torch.where(better[:, None, None], drawn, best)
        best_error = torch.where(better, error.abs(), best_error)
        radius = radius + (SCALE * error / 2.0).nan_to_num(0.0)
    return best


def set_thickness(
    image: Tensor | np.ndarray,
    target: Tensor | np.ndarray | float,
    *,
    refine_steps: int = 1,
) -> Tensor:
    """Re-draw digits to a target thickness by dilation or erosion with a disk at 4× resolution.

    Morpho-MNIST's thickening/thinning: the digit is upscaled ×4, binarised, dilated (thicker) or
    eroded (thinner) by a disk of radius ``4 (target − measured) / 2`` and averaged back down.
    The disk operations use the Euclidean distance transform (exact, any real radius, the same
    cost for every radius). Each of ``refine_steps`` then measures the result and corrects the
    radius by the remaining error, starting again from the original digit. The output is a
    fresh drawing whose stroke interior is 255: it does not keep the input's intensity (use
    ``set_intensity(set_thickness(x, t), measure_intensity(x))`` to keep it).

    Args:
        image: one digit ``(H, W)`` or a batch ``(n, H, W)`` / ``(n, 1, H, W)``, pixels in
            [0, 255] (torch or numpy).
        target: thickness in pixels, in (0, 28]: a scalar or ``(n,)``.
        refine_steps: measure-and-correct passes after the first drawing (0: Morpho-MNIST's
            single shot). Each unit keeps its closest drawing; mean |error| of the measured
            thickness on generated data: 0.08 px single shot, 0.03–0.05 after one step,
            0.02–0.04 after two (each step costs one more measurement).

    Returns:
        The re-drawn digits, same shape as ``image``, pixels in [0, 255]. Float dtype and device
        of ``image`` (the default dtype for numpy input). As in Morpho-MNIST, erosion removes
        strokes narrower than the disk: a heavy digit thinned far (a 5 px digit to 1.5 px) can
        lose parts, and a digit eroded below one pixel may vanish (measured thickness NaN).

    Raises:
        ShapeError, NonFiniteError, DataError: bad image or target, or a blank image.

    Example:
        >>> from pyro_scm.datasets import load_mnist_digits
        >>> digits, _ = load_mnist_digits()
        >>> set_thickness(digits[0], 4.0).shape
        torch.Size([28, 28])
    """
    x = _as_images(image, "image", single=True)
    if _blank(x).any():
        raise DataError(f"image: blank images (no foreground) at {_blank(x).nonzero().flatten()}")
    if refine_steps < 0:
        raise DataError(f"refine_steps must be >= 0, got {refine_steps}")
    t = _as_targets(target, len(x), "target", upper=28.0)
    drawn = _chunked(lambda xs, ts: _set_thickness_chunk(xs, ts, refine_steps), x, t)
    return _restore_shape(drawn, image)


def set_intensity(image: Tensor | np.ndarray, target: Tensor | np.ndarray | float) -> Tensor:
    """Scale digits so that their intensity (median foreground pixel) equals ``target``.

    Pixels are multiplied by ``target / measure_intensity(image)`` and clipped to [0, 255]. Where
    clipping lowers the 50% threshold (a faint digit scaled up), the factor is corrected and the
    scaling repeated, at most 8 times (on the 5,000 raw digits: error below 0.02, 4,998 below 1e-3).

    Args:
        image: ``(H, W)``, ``(n, H, W)`` or ``(n, 1, H, W)``, pixels in [0, 255].
        target: intensity in (0, 255]: a scalar or ``(n,)``.

    Returns:
        Same shape as ``image``, pixels in [0, 255]; float dtype and device of ``image``.

    Raises:
        ShapeError, NonFiniteError, DataError: bad image or target, or a blank image.
    """
    x = _as_images(image, "image", single=True)
    if _blank(x).any():
        raise DataError(f"image: blank images (no foreground) at {_blank(x).nonzero().flatten()}")
    target = _as_targets(target, len(x), "target", upper=255.0)
    factor = target / _foreground_median(x)
    for _ in range(_INTENSITY_STEPS):
        scaled = (x * factor[:, None, None]).clamp(0.0, 255.0)
        median = _foreground_median(scaled)
        if ((median - target).abs() <= 1e-9 * target).all():
            break
        factor = factor * target / median  # clipping lowered the threshold: scale again
    return _restore_shape(scaled, image)
