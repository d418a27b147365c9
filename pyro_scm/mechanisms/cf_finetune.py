r"""Counterfactual fine-tuning of an image mechanism (Ribeiro et al. 2023, § 3.3).

A fitted mechanism's counterfactuals need not honour their parents: nothing in the ELBO asks the
decoder to *use* the parents rather than the abducted latents. Counterfactual training asks it
directly. With anti-causal predictors q(pa | x) trained on the data, counterfactual parents pa*
drawn per unit, and x* = generate(abduct(x; pa); pa*), it solves

    min_θ  −E log q(pa* | x*)   subject to   nELBO_θ(x) ≤ nELBO₀ + slack

by a Lagrangian L = −log q(pa* | x*) + λ (nELBO_θ(x) − nELBO₀ − slack) with θ minimising L and
λ ≥ 0 ascending on the constraint (λ ← max(0, λ + η g)), so the fit of the data may not degrade
by more than ``slack`` nats per image while the counterfactuals learn to show their parents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import DataError, MechanismError, ShapeError

__all__ = ["counterfactual_finetune", "swap_one_parent"]

Parents = Sequence[Tensor]


def swap_one_parent(parents: Parents, generator: torch.Generator | None = None) -> list[Tensor]:
    """Counterfactual parents: each unit takes, for one parent picked at random, the value of
    another random unit (the intervention do(pa_k = a value the data hold)). Each parent is
    ``(n,)`` or ``(n, d)``."""
    n = parents[0].shape[0]
    device = parents[0].device
    pick = torch.randint(len(parents), (n,), generator=generator).to(device)
    perm = torch.randperm(n, generator=generator).to(device)
    out = []
    for k, p in enumerate(parents):
        mask = (pick == k).reshape(n, *[1] * (p.dim() - 1))
        out.append(torch.where(mask, p[perm], p))
    return out


def counterfactual_finetune(
    mechanism,
    values: Tensor,
    parents: Parents,
    log_q: Callable[[Tensor, Parents], Tensor],
    *,
    intervene: Callable[[Parents, torch.Generator], Parents] = swap_one_parent,
    epochs: int = 1,
    batch_size: int = 64,
    lr: float = 1e-4,
    slack: float = 1.0,
    lagrange_lr: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Fine-tune ``mechanism`` so its counterfactuals honour their parents (see module doc).

    Args:
        mechanism: a fitted image mechanism (``mechanism(*parents)`` gives ``abduct``,
            ``generate`` and ``loss``), trained in place.
        values: the node's values ``(n, *event)``.
        parents: its parents as the program passes them, each ``(n, ...)``.
        log_q: ``(images (B, *event), parents) -> (B,)``, log q(pa | x) of frozen anti-causal
            predictors.
        intervene: ``(parents, generator) -> counterfactual parents`` (default
            :func:`swap_one_parent`).
        epochs, batch_size, lr: the optimiser's schedule (Adam).
        slack: how many nats per image the negative ELBO may rise above its starting value.
        lagrange_lr: step of the multiplier's ascent.
        seed: seeds the batches and the interventions.
        progress: show a progress bar.

    Returns:
        one row per step: ``step``, ``cf_nll`` (−log q(pa* | x*)), ``nelbo``, ``lambda``.

    Raises:
        MechanismError: the mechanism has no ``loss``/``abduct``; DataError: bad schedule;
        ShapeError: parents and values disagree on n.
    """
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(v, int) or v < 1:
            raise DataError(f"counterfactual_finetune: {name} must be an int >= 1, got {v!r}")
    if not (lr > 0 and slack >= 0 and lagrange_lr > 0):
        raise DataError("counterfactual_finetune needs lr > 0, slack >= 0 and lagrange_lr > 0")
    if not parents or any(p.shape[0] != values.shape[0] for p in parents):
        raise ShapeError("counterfactual_finetune: every parent needs one value per unit")
    d0 = mechanism(*[p[:2] for p in parents])
    if not all(hasattr(d0, k) for k in ("abduct", "generate", "loss")):
        raise MechanismError("counterfactual_finetune needs a mechanism with abduct and loss")
    n = values.shape[0]
    generator = torch.Generator().manual_seed(seed)
    was_training = mechanism.training
    mechanism.eval()
    with torch.no_grad():
        base = torch.cat(
            [
                mechanism(*[p[idx] for p in parents]).loss(values[idx])
                for idx in torch.arange(n, device=values.device).split(256)
            ]
        ).mean()
    lam = torch.zeros((), device=values.device)
    optimizer = torch.optim.Adam([p for p in mechanism.parameters() if p.requires_grad], lr=lr)
    rows, step = [], 0
    mechanism.train()
    for _ in tqdm(range(epochs), desc="cf fine-tune", disable=not progress, leave=False):
        for idx in torch.randperm(n, generator=generator).split(batch_size):
            idx = idx.to(values.device)
            x, pa = values[idx], [p[idx] for p in parents]
            pa_cf = intervene(pa, generator)
            u = mechanism(*pa).abduct(x)
            x_cf = mechanism(*pa_cf).generate(u)
            cf_nll = -log_q(x_cf, pa_cf).mean()
            nelbo = mechanism(*pa).loss(x).mean()
            gap = nelbo - base - slack
            loss = cf_nll + lam * gap
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lam = (lam + lagrange_lr * gap.detach()).clamp(min=0.0)
            rows.append(
                {
                    "step": step,
                    "cf_nll": cf_nll.item(),
                    "nelbo": nelbo.item(),
                    "lambda": lam.item(),
                }
            )
            step += 1
    mechanism.train(was_training)
    history = pd.DataFrame(rows)
    history.attrs["nelbo_start"] = float(base)
    return history
