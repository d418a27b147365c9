"""Training: every mechanism on its own loss, with mini-batches, a validation split and early
stopping per mechanism.

The program runs conditioned on the data, so each mechanism sees its parents' observed values and
its loss (flows: negative log-likelihood) depends on its own parameters only; the sum of the losses
therefore trains the mechanisms independently, and each one stops when its validation loss stops
improving, keeping its best weights.
"""

from __future__ import annotations

import copy
import math
import warnings

import pandas as pd
import pyro.poutine as poutine
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import validation
from .data import to_node_tensors
from .errors import DataError, FitWarning
from .extrapolation import record_support
from .handlers import as_mechanism

__all__ = ["fit", "mechanism_losses", "prepare"]


def mechanism_losses(scm, data: dict[str, Tensor]) -> dict[str, Tensor]:
    """Mean training loss of each node's mechanism on ``data`` (node -> ``(units, *event)``)."""
    with poutine.trace() as tracer, poutine.condition(data=data):
        scm.model()
    return {
        name: as_mechanism(site).loss(site["value"]).mean()
        for name, site in tracer.trace.nodes.items()
        if site["type"] == "sample"
    }


@torch.no_grad()
def prepare(scm, data: dict[str, Tensor]) -> dict[str, nn.Module]:
    """Let every mechanism learn its data statistics; returns node -> mechanism module."""
    with poutine.trace() as tracer, poutine.condition(data=data):
        scm.model()
    mechanisms = {}
    for name, site in tracer.trace.nodes.items():
        if site["type"] == "sample":
            fn = as_mechanism(site)
            fn.mechanism.prepare(site["value"], *fn.parents)
            mechanisms[name] = fn.mechanism
    record_support(scm, data)  # parent statistics for the extrapolation diagnostics
    return mechanisms


@validation.guarded
@validation.unchecked_distributions
@torch.enable_grad()
def fit(
    scm,
    data: object,
    *,
    epochs: int = 200,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    val_fraction: float = 0.1,
    patience: int = 5,
    lr_decay: float | None = 0.3,
    max_decays: int = 3,
    seed: int | None = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Fit every mechanism of ``scm`` to ``data`` by its own loss.

    Adam over mini-batches; ``val_fraction`` of the units are held out, and each mechanism stops
    after ``patience`` epochs without a better validation loss and keeps its best weights. The
    defaults (learning rate times 0.3 on each of 3 plateaus of 5 epochs, then stop) are the
    settings of the DCM benchmark (``docs/benchmarks.md``).

    Args:
        scm: the model.
        data: a DataFrame or dict node -> ``(units, *event)`` with every node.
        epochs: the most passes over the training units.
        batch_size: units per step.
        lr: Adam's learning rate.
        weight_decay: Adam's weight decay.
        val_fraction: share of units held out for validation (0 disables early stopping).
        patience: epochs without improvement before a mechanism stops (or, with ``lr_decay``,
            before its learning rate is multiplied by ``lr_decay``); a mechanism's
            ``min_patience`` raises it for that mechanism (20 for a diffusion mechanism).
        lr_decay: reduce-on-plateau factor in (0, 1), per mechanism; None keeps ``lr`` fixed (and
            a mechanism stops at its first plateau).
        max_decays: with ``lr_decay``, the plateaus a mechanism decays on; it stops at the next.
        seed: seed of the split and the shuffling (None: torch's global generator).
        progress: show a tqdm progress bar.

    Returns:
        the history, one row per (epoch, node): columns ``epoch``, ``node``, ``train``, ``val``.
    """
    validation.check_fit_arguments(
        **{k: v for k, v in locals().items() if k not in ("scm", "data")}
    )
    values = to_node_tensors(data, scm.specs, where="training data", like=scm._like())
    units = next(iter(values.values())).shape[0]
    device = next(iter(values.values())).device
    generator = torch.Generator(device="cpu")
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.seed()
    perm = torch.randperm(units, generator=generator).to(device)
    n_val = round(units * val_fraction)
    if val_fraction > 0 and (n_val < 1 or units - n_val < 1):
        raise DataError(f"{units} units are too few for a validation split of {val_fraction}")
    train = {k: v[perm[n_val:]] for k, v in values.items()}
    val = {k: v[perm[:n_val]] for k, v in values.items()} if n_val else None
    mechanisms = prepare(scm, train)
    trainable = {
        k: m for k, m in mechanisms.items() if any(p.requires_grad for p in m.parameters())
    }
    history: list[dict] = []
    if not trainable:
        validation.mark_fitted_mechanisms(mechanisms.values())
        return pd.DataFrame(history, columns=["epoch", "node", "train", "val"])
    optimizer = adam(_param_groups(trainable), lr=lr, weight_decay=weight_decay)
    stopper = _EarlyStopping(trainable, patience, optimizer, lr_decay, max_decays)
    stopper.start(_initial_losses(scm, val))
    n_train = units - n_val
    steps = math.ceil(n_train / batch_size)
    bar = tqdm(range(epochs), desc="fit", disable=not progress, leave=False)
    for epoch in bar:
        scm.train()
        order = torch.randperm(n_train, generator=generator).to(device)
        sums = dict.fromkeys(stopper.active, 0.0)
        for step in range(steps):
            idx = order[step * batch_size : (step + 1) * batch_size]
            losses = mechanism_losses(scm, {k: v[idx] for k, v in train.items()})
            total = sum(losses[k] for k in stopper.active)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            for k in sums:
                sums[k] = sums[k] + losses[k].detach() / steps  # no device sync per step
        scm.eval()
        with torch.no_grad():
            val_losses = mechanism_losses(scm, val) if val is not None else {}
        sums = {k: float(v) for k, v in sums.items()}
        for k, train_loss in sums.items():
            val_loss = val_losses[k].item() if k in val_losses else float("nan")
            history.append({"epoch": epoch, "node": k, "train": train_loss, "val": val_loss})
            stopper.update(k, val_loss if val is not None else train_loss, train_loss)
        bar.set_postfix(loss=f"{sum(sums.values()):.3f}", active=len(stopper.active))
        if not stopper.active:
            break
    bar.close()
    stopper.restore()
    validation.mark_fitted_mechanisms(mechanisms.values())
    scm.eval()
    return pd.DataFrame(history)


@torch.no_grad()
def _initial_losses(scm, val: dict[str, Tensor] | None) -> dict[str, float]:
    if val is None:
        return {}
    scm.eval()
    return {k: float(v) for k, v in mechanism_losses(scm, val).items()}


#: devices with a fused Adam kernel (CPU since torch 2.4)
_FUSED = (
    ("cpu", "cuda")
    if tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 4)
    else ("cuda",)
)


def adam(groups: list[dict], lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam over ``groups``, with the fused update where torch has one for every parameter
    (CPU and CUDA floating point: one kernel per step instead of a Python loop per tensor)."""
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.is_floating_point() and p.device.type in _FUSED for p in params)
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)


def _param_groups(mechanisms: dict[str, nn.Module]) -> list[dict]:
    """One Adam parameter group per mechanism (a shared parameter joins the first one's)."""
    seen: set[int] = set()
    groups = []
    for node, m in mechanisms.items():
        params = [p for p in m.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"params": params, "node": node})
    return groups


class _EarlyStopping:
    """Per-mechanism best weights, patience and (optionally) learning-rate decay on plateaus."""

    def __init__(
        self,
        mechanisms: dict[str, nn.Module],
        patience: int,
        optimizer: torch.optim.Optimizer | None = None,
        lr_decay: float | None = None,
        max_decays: int = 0,
    ):
        self.mechanisms = mechanisms
        # per mechanism: a noisy loss (diffusion) asks for more patience (Mechanism.min_patience)
        self.patience = {
            k: max(patience, getattr(m, "min_patience", 0)) for k, m in mechanisms.items()
        }
        self.optimizer, self.lr_decay = optimizer, lr_decay
        self.active = list(mechanisms)
        self.best = dict.fromkeys(mechanisms, math.inf)
        self.state = {k: copy.deepcopy(m.state_dict()) for k, m in mechanisms.items()}
        self.wait = dict.fromkeys(mechanisms, 0)
        self.decays_left = dict.fromkeys(mechanisms, max_decays if lr_decay else 0)

    def start(self, losses: dict[str, float]) -> None:
        """The validation losses of the initial weights: training must beat them."""
        for k, loss in losses.items():
            if k in self.best and math.isfinite(loss):
                self.best[k] = loss

    def update(self, node: str, loss: float, train_loss: float = 0.0) -> None:
        best = self.best[node]
        exploded = math.isfinite(best) and loss > best + 100 * max(1.0, abs(best))
        if not (math.isfinite(loss) and math.isfinite(train_loss)) or exploded:
            self.active.remove(node)  # diverged: stop; restore() brings back the best weights
            warnings.warn(
                f"training of node {node!r} stopped: its loss diverged (train {train_loss:.3g}, "
                f"validation {loss:.3g}, best {best:.3g}); its best weights were kept "
                "(lower lr, or check the data)",
                FitWarning,
                stacklevel=3,
            )
            return
        if math.isinf(best) or loss < best - 1e-4 * max(1.0, abs(best)):
            self.best[node], self.wait[node] = loss, 0
            self.state[node] = copy.deepcopy(self.mechanisms[node].state_dict())
        else:
            self.wait[node] += 1
            if self.wait[node] < self.patience[node]:
                return
            if self.decays_left[node] > 0:
                self.decays_left[node] -= 1
                self.wait[node] = 0
                for group in self.optimizer.param_groups:
                    if group.get("node") == node:
                        group["lr"] *= self.lr_decay
            else:
                self.active.remove(node)

    def restore(self) -> None:
        for k, m in self.mechanisms.items():
            m.load_state_dict(self.state[k])
