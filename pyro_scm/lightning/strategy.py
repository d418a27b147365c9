"""Which ``lightning.Trainer`` strategies pyro_scm.lightning runs on, checked before any work.

Supported (and tested on CPU processes): one process (``SingleDeviceStrategy``, Lightning's
``"auto"`` on one device) and DDP whose ranks are separate processes started by Lightning
re-running the script, by ``torchrun`` or by SLURM (``strategy="ddp"``; any ``DDPStrategy``
subclass with that launch). Refused with :class:`~pyro_scm.errors.ArgumentError`:

- ``ddp_spawn`` / ``ddp_fork`` / ``ddp_notebook``: the ranks are children of the calling process,
  and the training history and early-stopping state would stay in them (the caller would get
  Lightning's copied weights and an empty history);
- FSDP, DeepSpeed, model parallelism and other strategies: they shard or wrap the parameters,
  while every mechanism trains in its own Adam parameter group over its own parameters and every
  rank answers queries with the whole model. Lightning itself refuses ``strategy="fsdp"`` with
  ``accelerator="cpu"``.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy, SingleDeviceStrategy
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher

from ..errors import ArgumentError, DataError

__all__ = ["check_trainer"]


def check_trainer(trainer: object, where: str) -> L.Trainer:
    """``trainer`` if it is a ``lightning.Trainer`` on a supported strategy, else a typed error.

    Raises:
        DataError: ``trainer`` is not a ``lightning.Trainer``.
        ArgumentError: its strategy is not one process or process-per-rank DDP.
    """
    if not isinstance(trainer, L.Trainer):
        raise DataError(f"trainer must be a lightning.Trainer, not {type(trainer).__name__}")
    strategy = trainer.strategy
    name = type(strategy).__name__
    if isinstance(strategy, DDPStrategy) and isinstance(
        strategy.launcher, _MultiProcessingLauncher
    ):
        raise ArgumentError(
            f"{where}: trainer.strategy is DDP started by spawn/fork ({name}); its ranks would "
            "keep the training history and early-stopping state. Use strategy='ddp' (Lightning "
            "re-runs the script per rank), torchrun or SLURM"
        )
    supported = isinstance(strategy, SingleDeviceStrategy | DDPStrategy)
    if not supported or isinstance(strategy, DeepSpeedStrategy):
        raise ArgumentError(
            f"{where}: trainer.strategy {name} is not supported: pyro_scm.lightning trains each "
            "mechanism in its own parameter group on whole (unsharded) parameters; use one "
            "device or strategy='ddp' (see docs/scaling.md)"
        )
    return trainer
