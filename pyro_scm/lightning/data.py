"""``SCMDataModule``: training and validation units from a DataFrame, tensors or a data set.

The split is ``pyro_scm.fitting.fit``'s (a permutation seeded by ``seed``; the first
``round(units * val_fraction)`` units validate), so both trainers see the same units. Each rank
reads its share through a :class:`~torch.utils.data.DistributedSampler` built here (Lightning
keeps samplers of that type): training shuffles per epoch from ``(seed, epoch)``, which makes
resumed runs draw the same batches; validation gives every unit to exactly one rank, unpadded.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import lightning as L
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from ..data import to_node_tensors
from ..errors import DataError

__all__ = ["SCMDataModule"]


class _Units(Dataset):
    """Units of in-memory tensors; a list of indices is fetched in one indexing operation."""

    def __init__(self, values: dict[str, Tensor], index: Tensor):
        self.values, self.index = values, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[self.index[i]] for k, v in self.values.items()}

    def __getitems__(self, items: list[int]) -> dict[str, Tensor]:
        rows = self.index[torch.as_tensor(items, dtype=torch.long)]
        return {k: v[rows] for k, v in self.values.items()}


class _Subset(Dataset):
    """Units ``index`` of a map-style data set of units (node -> ``(*event)`` per item)."""

    def __init__(self, dataset: Dataset, index: Tensor):
        self.dataset, self.index = dataset, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[int(self.index[i])]


class _Collate:
    """Stack items into node -> ``(batch, *event)`` and validate them against the model."""

    def __init__(self, specs, like: Tensor):
        self.specs, self.like = specs, like

    def __call__(self, batch) -> dict[str, Tensor]:
        if isinstance(batch, Mapping):  # fetched at once by _Units, validated up front
            return batch
        return to_node_tensors(
            default_collate(batch), self.specs, where="a training batch", like=self.like
        )


class _EvalSampler(DistributedSampler):
    """Every unit on exactly one rank, in order, without padding (validation)."""

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


class SCMDataModule(L.LightningDataModule):
    """Units of an SCM's nodes for ``Trainer.fit``, split into training and validation units.

    Args:
        scm: the model (its node specs and floating dtype).
        data: a DataFrame, a dict node -> ``(units, *event)``, or a map-style
            :class:`~torch.utils.data.Dataset` whose items are dicts node -> ``(*event)``
            (e.g. images read from disk; categorical nodes one-hot or as class indices).
        batch_size: units per step on each rank (the global batch is ``batch_size * world``).
        val_fraction: share of units held out for validation (0: none).
        seed: seed of the split and the shuffling.
        num_workers: DataLoader workers per rank.
    """

    def __init__(
        self,
        scm,
        data: object,
        *,
        batch_size: int = 256,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
    ):
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise DataError(f"batch_size must be a positive int, got {batch_size!r}")
        if not 0 <= val_fraction < 1:
            raise DataError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise DataError(f"num_workers must be a non-negative int, got {num_workers!r}")
        self.specs = scm.specs
        self.like = torch.zeros((), dtype=scm._like().dtype)
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        if isinstance(data, Dataset) and not isinstance(data, pd.DataFrame | Mapping):
            self.dataset, self.values = data, None
            units = _dataset_length(data)
            self._collate = _Collate(self.specs, self.like)
            self._collate([data[0]])  # the first unit, checked now: errors before training
        else:
            self.values = to_node_tensors(data, self.specs, where="training data", like=self.like)
            self.dataset = None
            units = next(iter(self.values.values())).shape[0]
            self._collate = _Collate(self.specs, self.like)
        generator = torch.Generator().manual_seed(seed)
        perm = torch.randperm(units, generator=generator)
        n_val = round(units * val_fraction)
        if val_fraction > 0 and (n_val < 1 or units - n_val < 1):
            raise DataError(f"{units} units are too few for a validation split of {val_fraction}")
        self.train_index, self.val_index = perm[n_val:], perm[:n_val]

    def _units(self, index: Tensor) -> Dataset:
        if self.values is not None:
            return _Units(self.values, index)
        return _Subset(self.dataset, index)

    def _loader(self, index: Tensor, sampler: DistributedSampler) -> DataLoader:
        return DataLoader(
            self._units(index),
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=self._collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _ranks(self) -> dict:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        return {"num_replicas": world, "rank": rank}

    def train_dataloader(self) -> DataLoader:
        """This rank's training units, reshuffled every epoch from ``(seed, epoch)``."""
        units = self._units(self.train_index)
        sampler = DistributedSampler(units, shuffle=True, seed=self.seed, **self._ranks())
        return self._loader(self.train_index, sampler)

    def val_dataloader(self) -> DataLoader | list:
        """This rank's validation units (none: an empty list)."""
        if not len(self.val_index):
            return []
        units = self._units(self.val_index)
        return self._loader(self.val_index, _EvalSampler(units, shuffle=False, **self._ranks()))

    def training_units(self, limit: int | None = None) -> dict[str, Tensor]:
        """The training units (the first ``limit`` of them), node -> ``(units, *event)``.

        For the standardisation statistics; a data set on disk is read in batches.
        """
        index = self.train_index if limit is None else self.train_index[:limit]
        if self.values is not None:
            return {k: v[index] for k, v in self.values.items()}
        loader = DataLoader(
            self._units(index),
            batch_size=self.batch_size,
            collate_fn=self._collate,
            num_workers=self.num_workers,
        )
        batches = list(loader)
        return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def _dataset_length(data: Dataset) -> int:
    try:
        units = len(data)
    except TypeError as e:
        raise DataError("a training data set must be map-style (have a length)") from e
    if units < 1:
        raise DataError("the training data set has no units")
    return units
