"""``fit``: train an SCM's mechanisms with a ``lightning.Trainer`` (one GPU, DDP, many nodes)."""

from __future__ import annotations

import warnings

import lightning as L
import pandas as pd
import pyro.poutine as poutine
from torch import nn

from .. import validation
from ..errors import DataError
from ..handlers import as_mechanism
from .data import SCMDataModule
from .module import SCMModule
from .strategy import check_trainer

__all__ = ["fit"]

COLUMNS = ["epoch", "node", "train", "val"]


def fit(
    scm,
    data: object,
    *,
    trainer: L.Trainer,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    val_fraction: float = 0.1,
    patience: int = 10,
    lr_decay: float | None = None,
    max_decays: int = 3,
    seed: int = 0,
    num_workers: int = 0,
    stats_units: int | None = None,
    ckpt_path: str | None = None,
    epochs: None = None,
    progress: None = None,
) -> pd.DataFrame:
    """Fit every mechanism of ``scm`` to ``data`` by its own loss, under ``trainer``.

    The options mean what they mean in :func:`pyro_scm.fitting.fit`; the number of epochs is the
    Trainer's ``max_epochs`` and its progress bar is the Trainer's. With DDP every rank runs this
    call (Lightning starts the ranks): the result is the same on all of them.

    Args:
        scm: the model, trained in place (an ordinary SCM afterwards: save, load, query).
        data: a DataFrame, a dict node -> ``(units, *event)``, or a map-style data set of units
            (see :class:`~pyro_scm.lightning.SCMDataModule`).
        trainer: a ``lightning.Trainer`` (e.g. ``strategy="ddp", devices=8, num_nodes=2``).
        batch_size: units per step on each rank.
        num_workers: DataLoader workers per rank.
        stats_units: standardise on this many training units (None: all of them).
        ckpt_path: a Lightning checkpoint to resume from.

    Returns:
        the history, one row per (epoch, node): ``epoch``, ``node``, ``train``, ``val``.

    Raises:
        DataError: a bad option or data, ``epochs`` or ``progress`` given (the Trainer's).
        ArgumentError: an unsupported strategy (FSDP, DeepSpeed, DDP by spawn or fork; see
            :mod:`pyro_scm.lightning.strategy`).
    """
    check_trainer(trainer, "fit")
    if epochs is not None or progress is not None:
        raise DataError(
            "with a trainer, epochs are the Trainer's max_epochs and the progress bar is its "
            "enable_progress_bar; drop epochs= and progress="
        )
    if lr_decay is not None and not (0 < lr_decay < 1 and max_decays >= 0):
        raise DataError(
            f"fit needs 0 < lr_decay < 1 and max_decays >= 0, got {lr_decay}, {max_decays}"
        )
    if not lr > 0 or weight_decay < 0 or not isinstance(patience, int) or patience < 1:
        raise DataError(
            f"fit needs lr > 0, weight_decay >= 0 and patience >= 1, got {lr}, {weight_decay}, "
            f"{patience}"
        )
    if stats_units is not None and (not isinstance(stats_units, int) or stats_units < 1):
        raise DataError(f"stats_units must be a positive int or None, got {stats_units!r}")
    datamodule = SCMDataModule(
        scm,
        data,
        batch_size=batch_size,
        val_fraction=val_fraction,
        seed=seed,
        num_workers=num_workers,
    )
    world = trainer.world_size
    if 0 < len(datamodule.val_index) < world or len(datamodule.train_index) < world:
        raise DataError(
            f"{len(datamodule.train_index)} training and {len(datamodule.val_index)} validation "
            f"units cannot give each of {world} ranks at least one"
        )
    mechanisms = _trainable(scm, datamodule.training_units(limit=2))
    if not mechanisms:
        return pd.DataFrame([], columns=COLUMNS)
    module = SCMModule(
        scm,
        mechanisms,
        lr=lr,
        weight_decay=weight_decay,
        patience=patience,
        lr_decay=lr_decay,
        max_decays=max_decays,
        stats_units=stats_units,
    )
    with warnings.catch_warnings():
        if not len(datamodule.val_index):  # no validation loader is what val_fraction=0 means
            warnings.filterwarnings("ignore", message="Total length of `list` across ranks is zero")
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    validation.mark_fitted_mechanisms(mechanisms.values())
    return pd.DataFrame(module.history, columns=COLUMNS)


def _trainable(scm, units: dict) -> dict[str, nn.Module]:
    """Node -> mechanism of the nodes with trainable parameters (from one traced run)."""
    like = scm._like()
    data = {k: v.to(like) for k, v in units.items()}
    with poutine.trace() as tracer, poutine.condition(data=data):
        scm.model()
    out = {}
    for name, site in tracer.trace.nodes.items():
        if site["type"] == "sample":
            mechanism = as_mechanism(site).mechanism
            if any(p.requires_grad for p in mechanism.parameters()):
                out[name] = mechanism
    return out
