"""Scaling out on PyTorch Lightning: training on many devices and sharded queries.

Needs the ``lightning`` extra (``pip install pyro-scm[lightning]``); the rest of pyro_scm does
not import Lightning.

- :func:`fit`: train every mechanism on its own loss under a ``lightning.Trainer``
  (:class:`SCMModule` over :class:`SCMDataModule`);
- :func:`counterfactual`, :func:`sample`, :func:`backtrack`: queries in seeded chunks, answered by
  the Trainer's ranks under ``Trainer.predict`` (:class:`ShardWriter`, :func:`merge_shards`), or in
  this process with ``trainer=None``; both give the same result.
"""

try:
    import lightning  # noqa: F401
except ImportError as e:  # pragma: no cover - exercised by the no-lightning test
    raise ImportError(
        "pyro_scm.lightning needs PyTorch Lightning: pip install 'pyro-scm[lightning]'"
    ) from e

from ..sharded import backtrack, counterfactual, sample
from .data import SCMDataModule
from .fit import fit
from .module import SCMModule
from .predict import QueryModule, ShardWriter, merge_shards, run_sharded

__all__ = [
    "QueryModule",
    "SCMDataModule",
    "SCMModule",
    "ShardWriter",
    "backtrack",
    "counterfactual",
    "fit",
    "merge_shards",
    "run_sharded",
    "sample",
]
