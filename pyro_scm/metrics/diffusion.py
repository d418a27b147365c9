"""Metrics of image counterfactuals under a class intervention (Diff-SCM, Section 5).

- CLD, the counterfactual latent divergence (Sanchez & Tsaftaris 2022, Eq. 8-10): with a VAE
  encoder E(x) = (μ, σ), div = KL(N(μ_CF, σ_CF) ‖ N(μ_F, σ_F)) is compared with the divergences
  D(x, x_F) of the data of the counterfactual class (S_CF) and of the factual class (S_F):
  CLD = log(exp P(S_CF ≤ div) + exp P(S_F ≥ div)), in [log 2, log(2e)]; lower is better.
- IM1 and IM2 (Van Looveren & Klaise 2021) from class-wise autoencoders:
  IM1 = ‖x_CF - AE_t(x_CF)‖² / (‖x_CF - AE_o(x_CF)‖² + ε) (t: the target class, o: the factual
  class); IM2 = ‖AE_t(x_CF) - AE(x_CF)‖² / (‖x_CF‖₁ + ε) (AE: trained on every class).

The VAE and the autoencoders are small MLPs over flattened inputs, trained here for the purpose
(:func:`fit_vae`, :func:`fit_class_autoencoders`); any object with ``encode(x) -> (μ, log σ²)``
serves CLD.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import DataError, NonFiniteError, ShapeError
from ..nets.metrics import ClassAutoencoders, LatentVAE

__all__ = [
    "ClassAutoencoders",
    "LatentVAE",
    "cld",
    "cld_per_unit",
    "fit_class_autoencoders",
    "fit_vae",
    "gaussian_kl",
    "im1",
    "im2",
]


class Encoder(Protocol):
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]: ...


# --------------------------------------------------------------------------- inputs


def _images(x: object, what: str) -> Tensor:
    t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.float()
    if t.dim() < 2 or t.shape[0] == 0:
        raise ShapeError(f"{what} must be a non-empty batch (n, *event), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise NonFiniteError(f"{what} contains NaN or infinity")
    return t


def _labels(y: object, n: int, what: str) -> Tensor:
    t = torch.as_tensor(y)
    if t.dim() == 2:  # one-hot
        t = t.argmax(-1)
    if t.dim() != 1 or t.shape[0] != n:
        raise ShapeError(f"{what} must be {n} class indices or one-hot rows, got {tuple(t.shape)}")
    return t.long()


# --------------------------------------------------------------------------- training


def _train(
    loss_fn,
    data: Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    params,
    seed: int,
    desc: str,
    progress: bool,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr)
    n = data.shape[0]
    for _ in tqdm(range(epochs), desc=desc, leave=False, disable=not progress):
        order = torch.randperm(n, generator=gen).to(data.device)
        for i in range(0, n, batch_size):
            loss = loss_fn(data[order[i : i + batch_size]]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def fit_vae(
    data: object,
    *,
    latent: int = 20,
    hidden: Sequence[int] = (256,),
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> LatentVAE:
    """Train a :class:`LatentVAE` on ``data`` ``(n, *event)`` (scaled to about unit range)."""
    x = _images(data, "VAE training data")
    torch.manual_seed(seed)
    vae = LatentVAE(x[0].numel(), latent, hidden).to(x)
    _train(vae.loss, x, epochs, batch_size, lr, vae.parameters(), seed, "vae", progress)
    return vae.eval()


def fit_class_autoencoders(
    data: object,
    labels: object,
    num_classes: int,
    *,
    latent: int = 16,
    hidden: Sequence[int] = (128,),
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> ClassAutoencoders:
    """Train one autoencoder per class and one on all of ``data`` ``(n, *event)``."""
    x = _images(data, "autoencoder training data")
    y = _labels(labels, x.shape[0], "labels")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"labels must lie in [0, {num_classes}), got {y.min()}..{y.max()}")
    torch.manual_seed(seed)
    aes = ClassAutoencoders(x[0].numel(), num_classes, latent, hidden).to(x)

    def mse(model):
        return lambda b: (model(b) - b).square().flatten(1).sum(-1)

    _train(mse(aes.all), x, epochs, batch_size, lr, aes.all.parameters(), seed, "ae", progress)
    for k, ae in enumerate(aes.per_class):
        rows = x[y == k]
        if rows.shape[0] == 0:
            raise DataError(f"class {k} has no training data")
        _train(mse(ae), rows, epochs, batch_size, lr, ae.parameters(), seed, f"ae {k}", progress)
    return aes.eval()


# --------------------------------------------------------------------------- metrics


def gaussian_kl(mu_p: Tensor, log_var_p: Tensor, mu_q: Tensor, log_var_q: Tensor) -> Tensor:
    """KL(N(μ_p, σ_p²) ‖ N(μ_q, σ_q²)) of diagonal Gaussians, summed over the last dim."""
    ratio = (log_var_p - log_var_q).exp()
    return 0.5 * (
        ratio + (mu_p - mu_q).square() / log_var_q.exp() - 1 - (log_var_p - log_var_q)
    ).sum(-1)


@torch.no_grad()
def cld_per_unit(
    encoder: Encoder,
    factual: object,
    counterfactual: object,
    factual_class: object,
    target_class: object,
    data: object,
    data_class: object,
) -> Tensor:
    """CLD of each (factual, counterfactual) pair, ``(n,)``; see the module docstring.

    Args:
        encoder: an object with ``encode(x) -> (μ, log σ²)`` (e.g. :func:`fit_vae`'s result).
        factual, counterfactual: ``(n, *event)``.
        factual_class, target_class: ``(n,)`` class indices (or one-hot ``(n, K)``).
        data, data_class: the reference data set ``(m, *event)`` and its classes ``(m,)``.
    """
    xf, xcf = _images(factual, "factual"), _images(counterfactual, "counterfactual")
    if xf.shape != xcf.shape:
        raise ShapeError(f"factual {tuple(xf.shape)} and counterfactual {tuple(xcf.shape)} differ")
    ref = _images(data, "data")
    if ref.shape[1:] != xf.shape[1:]:
        raise ShapeError(f"data of event shape {tuple(ref.shape[1:])} differ from the factuals'")
    n = xf.shape[0]
    yf, yt = _labels(factual_class, n, "factual_class"), _labels(target_class, n, "target_class")
    yd = _labels(data_class, ref.shape[0], "data_class")
    mf, lf = encoder.encode(xf)
    mc, lc = encoder.encode(xcf)
    md, ld = encoder.encode(ref)
    div = gaussian_kl(mc, lc, mf, lf)  # (n,)
    dists = gaussian_kl(md[None], ld[None], mf[:, None], lf[:, None])  # (n, m)
    in_target = (yd[None] == yt[:, None]).to(dists)
    in_factual = (yd[None] == yf[:, None]).to(dists)
    if bool((in_target.sum(1) == 0).any() or (in_factual.sum(1) == 0).any()):
        raise DataError("the reference data lack a factual or a target class")
    p_cf = ((dists <= div[:, None]).to(dists) * in_target).sum(1) / in_target.sum(1)
    p_f = ((dists >= div[:, None]).to(dists) * in_factual).sum(1) / in_factual.sum(1)
    return torch.logaddexp(p_cf, p_f)


def cld(*args, **kwargs) -> float:
    """Mean CLD over the pairs; arguments as :func:`cld_per_unit`. In [log 2, log(2e)]."""
    return float(cld_per_unit(*args, **kwargs).mean())


def _recon_error(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).square().flatten(1).sum(-1)


@torch.no_grad()
def im1(
    autoencoders: ClassAutoencoders,
    counterfactual: object,
    factual_class: object,
    target_class: object,
    *,
    eps: float = 1e-8,
    reduce: bool = True,
) -> float | Tensor:
    """IM1 = ‖x - AE_target(x)‖² / (‖x - AE_factual(x)‖² + eps): lower is more realistic."""
    x = _images(counterfactual, "counterfactual")
    n = x.shape[0]
    yt, yf = _labels(target_class, n, "target_class"), _labels(factual_class, n, "factual_class")
    score = _recon_error(x, autoencoders.reconstruct(x, yt)) / (
        _recon_error(x, autoencoders.reconstruct(x, yf)) + eps
    )
    return float(score.mean()) if reduce else score


@torch.no_grad()
def im2(
    autoencoders: ClassAutoencoders,
    counterfactual: object,
    target_class: object,
    *,
    eps: float = 1e-8,
    reduce: bool = True,
) -> float | Tensor:
    """IM2 = ‖AE_target(x) - AE(x)‖² / (‖x‖₁ + eps): lower is closer to the target class."""
    x = _images(counterfactual, "counterfactual")
    yt = _labels(target_class, x.shape[0], "target_class")
    diff = _recon_error(autoencoders.reconstruct(x, yt), autoencoders.reconstruct(x))
    score = diff / (x.abs().flatten(1).sum(-1) + eps)
    return float(score.mean()) if reduce else score
