"""``SCMModule``: a LightningModule that trains every mechanism of an SCM on its own loss.

It is ``pyro_scm.fitting.fit`` on Lightning's loop: the program runs conditioned on a batch
(:func:`~pyro_scm.fitting.mechanism_losses`), the step minimises the sum of the mechanisms'
losses, each of which depends on its own mechanism's parameters only, and Adam has one parameter
group per mechanism. Per-mechanism early stopping is the same :class:`_EarlyStopping`, fed with
validation losses summed over all ranks: a mechanism that stops has its group frozen (learning
rate 0; its gradient still flows so that DDP sees every parameter), and at the end of training
every mechanism gets back its best weights. Standardisation statistics are computed once, by rank
0 on all training units, and broadcast to the other ranks before DDP wraps the model.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor, nn

from ..fitting import _EarlyStopping, _param_groups, adam, mechanism_losses, prepare

__all__ = ["SCMModule"]


class SCMModule(L.LightningModule):
    """Trains ``scm``'s mechanisms under a ``lightning.Trainer``, on an :class:`SCMDataModule`.

    Args:
        scm: the model; trained in place.
        mechanisms: node -> mechanism of the nodes to train (those with trainable parameters).
        lr, weight_decay: Adam's.
        patience, lr_decay, max_decays: per-mechanism early stopping, as in
            :func:`pyro_scm.fitting.fit`.
        stats_units: standardise on the first this many training units (None: all).

    Logged each epoch: ``train/<node>`` and ``val/<node>`` (mean loss of the node's mechanism
    over all ranks' units) and ``val_loss`` (their sum). :attr:`history` has one row per
    (epoch, node) like ``scm.fit``'s; it and the early-stopping state go into checkpoints.
    """

    def __init__(
        self,
        scm,
        mechanisms: dict[str, nn.Module],
        *,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        patience: int = 10,
        lr_decay: float | None = None,
        max_decays: int = 3,
        stats_units: int | None = None,
    ):
        super().__init__()
        self.scm, self.nodes = scm, list(mechanisms)
        self._mechanisms = mechanisms  # plain dict: the modules are registered under self.scm
        self.lr, self.weight_decay = lr, weight_decay
        self.patience, self.lr_decay, self.max_decays = patience, lr_decay, max_decays
        self.stats_units = stats_units
        self.history: list[dict] = []
        self.stopper: _EarlyStopping | None = None
        self._restored: dict | None = None
        self._reset_sums()

    # -- setup --------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        """Standardisation statistics: rank 0 on the training units, then broadcast."""
        if stage != "fit":
            return
        strategy = self.trainer.strategy
        state = None
        if self.trainer.is_global_zero:
            units = self.trainer.datamodule.training_units(self.stats_units)
            device = self.scm._like().device
            prepare(self.scm, {k: v.to(device) for k, v in units.items()})
            state = {k: v.detach().to("cpu") for k, v in self.scm.state_dict().items()}
        state = strategy.broadcast(state, src=0)
        if not self.trainer.is_global_zero:
            self.scm.load_state_dict(state)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with one parameter group per mechanism (key ``node``), as in ``fit``."""
        return adam(_param_groups(self._mechanisms), lr=self.lr, weight_decay=self.weight_decay)

    def on_fit_start(self) -> None:
        """Early stopping over the mechanisms (restored from a checkpoint when resuming)."""
        optimizer = self.trainer.optimizers[0]
        self.stopper = _EarlyStopping(
            self._mechanisms, self.patience, optimizer, self.lr_decay, self.max_decays
        )
        if self._restored is not None:
            saved = self._restored
            self.history = list(saved["history"])
            for key in ("best", "wait", "decays_left", "state"):
                setattr(self.stopper, key, dict(saved[key]))
            self.stopper.active = list(saved["active"])
            self._restored = None
        self._freeze_stopped()
        self.trainer.should_stop = self.trainer.should_stop or not self.stopper.active

    # -- steps --------------------------------------------------------------------------------

    def _reset_sums(self) -> None:
        self._train_sum = dict.fromkeys(self.nodes, 0.0)
        self._train_steps = 0
        self._val_sum = dict.fromkeys(self.nodes, 0.0)
        self._val_units = 0

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        """Sum of the mechanisms' mean losses on the batch (stopped ones are frozen)."""
        losses = mechanism_losses(self.scm, batch)
        for k in self.nodes:
            self._train_sum[k] = self._train_sum[k] + losses[k].detach()
        self._train_steps += 1
        return sum(losses[k] for k in self.nodes)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Accumulate each mechanism's loss summed over the batch's units."""
        if self.trainer.sanity_checking:
            return
        losses = mechanism_losses(self.scm, batch)
        units = next(iter(batch.values())).shape[0]
        for k in self.nodes:
            self._val_sum[k] = self._val_sum[k] + losses[k] * units
        self._val_units += units

    # -- epoch ends: one all-reduce, then the early-stopping bookkeeping ----------------------

    def on_validation_epoch_end(self) -> None:
        """With validation units: record the epoch and update early stopping."""
        if not self.trainer.sanity_checking:
            self._end_epoch()

    def on_train_epoch_end(self) -> None:
        """Without validation units: the same on the training losses."""
        if self._train_steps and not self._has_validation():
            self._end_epoch()

    def _has_validation(self) -> bool:
        return bool(self.trainer.num_val_batches) and sum(self.trainer.num_val_batches) > 0

    def _end_epoch(self) -> None:
        like = self.scm._like()
        row = [self._train_sum[k] for k in self.nodes] + [self._val_sum[k] for k in self.nodes]
        row += [self._train_steps, self._val_units]
        vec = torch.stack([torch.as_tensor(v, dtype=like.dtype, device=like.device) for v in row])
        vec = self.trainer.strategy.reduce(vec, reduce_op="sum").tolist()
        n = len(self.nodes)
        steps, val_units = vec[2 * n], vec[2 * n + 1]
        train = {k: vec[i] / max(steps, 1) for i, k in enumerate(self.nodes)}
        val = {k: vec[n + i] / val_units for i, k in enumerate(self.nodes)} if val_units else {}
        epoch = self.current_epoch
        for k in list(self.stopper.active):
            v = val.get(k, math.nan)
            self.history.append({"epoch": epoch, "node": k, "train": train[k], "val": v})
            self.stopper.update(k, v if val else train[k])
        self._freeze_stopped()
        logged = {f"train/{k}": train[k] for k in self.nodes}
        logged.update({f"val/{k}": v for k, v in val.items()})
        if val:
            logged["val_loss"] = sum(val.values())
        self.log_dict(logged, sync_dist=False, rank_zero_only=False)
        if not self.stopper.active:
            self.trainer.should_stop = True
        self._reset_sums()

    def _freeze_stopped(self) -> None:
        for group in self.trainer.optimizers[0].param_groups:
            if group.get("node") not in self.stopper.active:
                group["lr"] = 0.0

    def on_fit_end(self) -> None:
        """Every mechanism gets back its best weights."""
        if self.stopper is not None:
            self.stopper.restore()
        self.scm.eval()

    # -- checkpoints ---------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Store the history and the early-stopping state next to the weights."""
        s = self.stopper
        checkpoint["pyro_scm"] = {
            "history": self.history,
            "active": list(s.active),
            "best": dict(s.best),
            "wait": dict(s.wait),
            "decays_left": dict(s.decays_left),
            "state": {k: {n: t.detach().cpu() for n, t in v.items()} for k, v in s.state.items()},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Keep the stored state until ``on_fit_start`` rebuilds early stopping."""
        self._restored = checkpoint.get("pyro_scm")
