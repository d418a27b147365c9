"""Sharded queries under ``Trainer.predict``: each rank answers its chunks, a writer stores them.

The chunks of a :class:`~pyro_scm.sharded.ShardedQuery` are the items of a map-style data set;
Lightning's predict loop hands every rank its share (``UnrepeatedDistributedSamplerWrapper``), the
:class:`ShardWriter` saves each answered chunk as ``chunk-<index>.pt`` in a folder all ranks see,
and :func:`merge_shards` reads the folder back into one :class:`~pyro_scm.QueryResult` in unit
order. Chunks are seeded by their index, so the merge equals the one-process answer exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from ..results import QueryResult
from ..sharded import ShardedQuery, categorical_nodes, merge, run_chunk, slice_chunk
from .strategy import check_trainer

__all__ = ["QueryModule", "ShardWriter", "merge_shards", "run_sharded"]

MANIFEST = "manifest.json"


class _Chunks(Dataset):
    """Item ``i``: chunk ``i``'s index, factual and tensor actions (CPU tensors)."""

    def __init__(self, query: ShardedQuery, factual: dict | None, actions: dict):
        self.query, self.factual = query, factual
        self.actions = {k: v for k, v in actions.items() if torch.is_tensor(v)}

    def __len__(self) -> int:
        return self.query.num_chunks

    def __getitem__(self, index: int) -> dict:
        factual, actions = slice_chunk(self.query, index, self.factual, self.actions)
        return {"index": index, "factual": factual, "actions": actions}


class QueryModule(L.LightningModule):
    """A LightningModule whose ``predict_step`` answers one chunk of a sharded query."""

    def __init__(self, scm, query: ShardedQuery, callables: Mapping[str, object]):
        super().__init__()
        self.scm, self.query, self.callables = scm, query, dict(callables)

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        """The chunk's payload (see :func:`pyro_scm.sharded.run_chunk`)."""
        # predict runs under inference mode; backtracking needs autograd on ordinary tensors
        with torch.inference_mode(False), torch.enable_grad():
            factual = _clone(batch["factual"])
            actions = {**_clone(batch["actions"]), **self.callables}
            return run_chunk(self.scm, self.query, int(batch["index"]), factual, actions)


def _first(items: list[dict]) -> dict:
    """A batch is one chunk."""
    return items[0]


def _clone(values: dict | None) -> dict | None:
    return None if values is None else {k: v.clone() for k, v in values.items()}


class ShardWriter(BasePredictionWriter):
    """Writes each answered chunk to ``folder/chunk-<index>.pt`` (and a manifest, rank 0).

    Rank 0 empties the folder of earlier chunks when predicting starts; all ranks wait for each
    other at the start and at the end, so the folder is complete when ``predict`` returns.
    """

    def __init__(self, folder: str | os.PathLike, query: ShardedQuery, categorical: dict):
        super().__init__(write_interval="batch")
        self.folder, self.query, self.categorical = Path(folder), query, categorical

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Rank 0 prepares the folder; every rank waits for it."""
        if trainer.is_global_zero:
            self.folder.mkdir(parents=True, exist_ok=True)
            for old in self.folder.glob("chunk-*.pt"):
                old.unlink()
            manifest = {**self.query.manifest(), "categorical": self.categorical}
            (self.folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
        trainer.strategy.barrier("pyro_scm-shards-start")

    def write_on_batch_end(
        self, trainer, pl_module, prediction: dict, batch_indices, batch, batch_idx, dl_idx
    ) -> None:
        """Save one chunk's payload (CPU tensors), atomically."""
        path = self.folder / f"chunk-{prediction['index']:07d}.pt"
        tmp = path.with_suffix(f".tmp{trainer.global_rank}")
        torch.save(_to_cpu(prediction), tmp)
        os.replace(tmp, path)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Wait until every rank has written its chunks."""
        trainer.strategy.barrier("pyro_scm-shards-end")


def _to_cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def merge_shards(
    folder: str | os.PathLike,
    interventions: Mapping[str, object] | None = None,
    *,
    warn: bool = True,
) -> QueryResult:
    """Read the shards a :class:`ShardWriter` wrote into one :class:`QueryResult`, in unit order.

    Args:
        folder: the shard folder (``manifest.json`` and ``chunk-*.pt``).
        interventions: callable interventions of the query, put into the result as given.
        warn: raise the chunks' warnings again (see :func:`pyro_scm.sharded.merge`).

    Raises:
        DataError: no manifest, or a chunk missing or from another query.
    """
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise DataError(f"{folder} holds no sharded query ({MANIFEST} is missing)")
    info = json.loads((folder / MANIFEST).read_text())
    query = ShardedQuery(info["kind"], info["units"], info["chunk_size"], info["seed"])
    payloads = [
        torch.load(p, map_location="cpu", weights_only=True)
        for p in sorted(folder.glob("chunk-*.pt"))
    ]
    return merge(
        query, payloads, categorical=info["categorical"], interventions=interventions, warn=warn
    )


def run_sharded(
    scm,
    query: ShardedQuery,
    factual: dict[str, Tensor] | None,
    actions: dict[str, object],
    *,
    trainer: L.Trainer,
    out_dir: str | os.PathLike | None = None,
    num_workers: int = 0,
) -> QueryResult:
    """Answer ``query``'s chunks on ``trainer``'s ranks and merge them (on every rank).

    Every rank returns the whole result; the chunks' warnings are raised again on rank 0 only
    (Lightning's convention: one copy of each message), the flags are in every rank's result.

    Args:
        scm: the model (moved to each rank's device by the Trainer).
        query, factual, actions: a plan from :mod:`pyro_scm.sharded` (CPU tensors).
        trainer: the ``lightning.Trainer`` (CPU processes, GPUs, nodes).
        out_dir: the shard folder, visible to every rank (None: a temporary folder, which only
            works when all ranks share one file system and is removed after the merge).
        num_workers: DataLoader workers that cut the chunks.
    """
    check_trainer(trainer, "a sharded query")
    if query.num_chunks < trainer.world_size:
        raise DataError(
            f"{query.num_chunks} chunks of {query.units} units cannot give each of "
            f"{trainer.world_size} ranks one; use chunk_size <= {query.units // trainer.world_size}"
        )
    if out_dir is None and trainer.world_size > 1:
        raise DataError("a sharded query on several processes needs out_dir= (a shared folder)")
    temporary = out_dir is None
    folder = Path(tempfile.mkdtemp(prefix="pyro_scm-shards-") if temporary else out_dir)
    callables = {k: v for k, v in actions.items() if not torch.is_tensor(v)}
    writer = ShardWriter(folder, query, categorical_nodes(scm))
    loader = DataLoader(
        _Chunks(query, factual, actions),
        batch_size=1,
        collate_fn=_first,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )
    trainer.callbacks.append(writer)
    try:
        trainer.predict(QueryModule(scm, query, callables), loader, return_predictions=False)
    finally:
        trainer.callbacks.remove(writer)
    try:
        return merge_shards(folder, callables, warn=trainer.is_global_zero)
    finally:
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
