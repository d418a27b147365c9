"""Training and scoring with anti-causal predictors (effectiveness by predictors, Melistas et al.
2024): a :class:`~pyro_scm.nets.predictors.ParentPredictor` fitted on the data set."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import ArgumentError, DataError, ShapeError
from ..nets.predictors import ParentPredictor

__all__ = ["predictor_effectiveness", "train_parent_predictor"]


def train_parent_predictor(
    images: Tensor,
    continuous: Tensor,
    labels: Tensor | None = None,
    *,
    classes: int = 10,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    beta: float = 0.5,
    progress: bool = False,
) -> ParentPredictor:
    """Fit q(pa | x) on ``images`` ``(n, C, H, W)`` in [0, 1], ``continuous`` parents ``(n, k)``
    and class ``labels`` ``(n,)``; returns it in eval mode.

    The loss is the β-NLL of :meth:`ParentPredictor.loss` (``beta = 0``: maximum likelihood),
    whose variance weight keeps the heteroscedastic head from trading the mean for its variance.

    Raises:
        ShapeError: the inputs disagree on n. DataError: fewer than two images.
        ArgumentError: ``beta`` outside [0, 1].
    """
    x = torch.as_tensor(images)
    c = torch.as_tensor(continuous).to(x).reshape(x.shape[0], -1) if x.dim() == 4 else None
    if x.dim() != 4 or c is None or (labels is not None and len(labels) != x.shape[0]):
        raise ShapeError("train_parent_predictor needs images (n, C, H, W), parents (n, k), (n,)")
    if x.shape[0] < 2:
        raise DataError("train_parent_predictor needs at least two images")
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta <= 1:
        raise ArgumentError(f"beta must be a number in [0, 1], got {beta!r}")
    torch.manual_seed(seed)
    model = ParentPredictor(x.shape[1], c.shape[1], classes if labels is not None else 0)
    model = model.to(x.device)
    model.loc.copy_(c.mean(0))
    model.scale.copy_(c.std(0).clamp(min=1e-6))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(epochs), desc="parent predictor", disable=not progress, leave=False):
        for idx in torch.randperm(x.shape[0], generator=generator).split(batch_size):
            idx = idx.to(x.device)
            y = labels[idx] if labels is not None else None
            loss = model.loss(x[idx], c[idx], y, beta).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def predictor_effectiveness(
    predictor: ParentPredictor,
    images: Tensor,
    continuous: Tensor,
    labels: Tensor | None,
    names: tuple[str, ...] = ("thickness", "intensity"),
) -> dict[str, float]:
    """MAE of the predicted continuous parents against the intended ``continuous`` ``(n, k)``
    (keys ``<name>_mae``) and accuracy against ``labels`` (``digit_accuracy``)."""
    x = torch.as_tensor(images).reshape(-1, *images.shape[-3:])
    c = torch.as_tensor(continuous).to(x).reshape(x.shape[0], -1)
    if c.shape[1] != len(names):
        raise ShapeError(f"expected {len(names)} continuous parents, got {c.shape[1]}")
    pred, cls = predictor.predict(x)
    out = {f"{n}_mae": float((pred[:, j] - c[:, j]).abs().mean()) for j, n in enumerate(names)}
    if labels is not None:
        y = labels.argmax(-1) if labels.dim() > 1 else labels
        out["digit_accuracy"] = float((cls == y.reshape(-1).to(cls)).float().mean())
    return out
