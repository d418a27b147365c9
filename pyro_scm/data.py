"""Turning user data (DataFrames, dicts of arrays, results) into validated node tensors.

Every check raises a typed error naming the node, before any computation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from . import validation
from .errors import (
    DataError,
    InterventionError,
    MissingNodeError,
    NonFiniteError,
    ShapeError,
    UnknownNodeError,
)
from .results import QueryResult

__all__ = ["NodeSpec", "broadcast_intervention", "node_specs_from_data", "to_node_tensors"]


@dataclass(frozen=True)
class NodeSpec:
    """What a node's values look like: event shape and, for categorical nodes, the class count."""

    event_shape: torch.Size
    num_classes: int | None = None


def to_node_tensors(
    data: object,
    specs: Mapping[str, NodeSpec],
    *,
    where: str,
    like: Tensor,
    required: bool = True,
) -> dict[str, Tensor]:
    """Validate ``data`` and return node -> ``(units, *event)`` tensors on ``like``'s device.

    Args:
        data: a DataFrame (a column per scalar node, ``node[i]`` columns for vector nodes, class
            indices for categorical nodes), a mapping node -> array, or a :class:`QueryResult`
            (its samples and units become units).
        specs: the model's nodes.
        where: what the data are, for error messages ("factual", "training data").
        like: a tensor giving device and floating dtype.
        required: every node must be given.
    """
    raw = _as_mapping(data, specs, where)
    for node in raw:
        if node not in specs:
            raise UnknownNodeError(node, list(specs), where)
    if required:
        for node in specs:
            if node not in raw:
                raise MissingNodeError(node, where)
    out: dict[str, Tensor] = {}
    for node, value in raw.items():
        out[node] = _node_tensor(node, value, specs[node], where, like)
    lengths = {node: v.shape[0] for node, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"the nodes of {where} have different numbers of units: {lengths}")
    if lengths and next(iter(lengths.values())) == 0:
        raise DataError(f"{where} has no units")
    return out


def _as_mapping(data: object, specs: Mapping[str, NodeSpec], where: str) -> dict[str, object]:
    if isinstance(data, QueryResult):
        return {k: v.reshape(-1, *v.shape[2:]) for k, v in data.values.items()}
    if isinstance(data, pd.DataFrame):
        return _from_frame(data, specs, where)
    if isinstance(data, Mapping):
        return dict(data)
    raise DataError(
        f"{where} must be a pandas DataFrame, a dict of node -> tensor or a QueryResult, "
        f"not {type(data).__name__}"
    )


def _from_frame(frame: pd.DataFrame, specs: Mapping[str, NodeSpec], where: str) -> dict:
    out: dict[str, object] = {}
    used: set[str] = set()
    for node, spec in specs.items():
        if node in frame.columns:
            column = frame[node]
            if spec.num_classes is not None and isinstance(column.dtype, pd.CategoricalDtype):
                column = column.cat.codes
            out[node] = column.to_numpy()
            used.add(node)
            continue
        if not spec.event_shape:
            continue  # a scalar node is one column named after it
        size = math.prod(spec.event_shape)
        names = [f"{node}[{i}]" for i in range(size)]
        present = [c for c in names if c in frame.columns]
        if present:
            if len(present) != size:
                missing = sorted(set(names) - set(present))
                raise ShapeError(f"node {node!r} in {where} lacks columns {missing}")
            out[node] = frame[names].to_numpy().reshape(len(frame), *spec.event_shape)
            used.update(names)
    stats = set(map(str, frame.attrs.get("sample_stats", ())))  # QueryResult.to_pandas
    validation.check_frame_columns(
        [c for c in frame.columns if str(c) not in stats], used, specs, where
    )
    return out


def _node_tensor(node: str, value: object, spec: NodeSpec, where: str, like: Tensor) -> Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise DataError(f"node {node!r} in {where} holds non-numeric values")
        if not value.flags.writeable:
            value = value.copy()
    validation.check_tensor(f"node {node!r} in {where}", value, DataError)
    t = torch.as_tensor(value, device=like.device)
    if spec.num_classes is not None and t.dim() >= 1:
        t = validation.categorical_value(node, t, spec.num_classes, where, ShapeError)
    t = t.to(dtype=like.dtype)
    if t.dim() == len(spec.event_shape) or t.shape[1:] != spec.event_shape:
        expected = ("units", *spec.event_shape)
        raise ShapeError(
            f"node {node!r} in {where} has shape {tuple(t.shape)}; expected {expected}"
        )
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).reshape(t.shape[0], -1).any(-1).sum())
        raise NonFiniteError(f"node {node!r} in {where} has NaN or infinite values in {bad} units")
    return t


def broadcast_intervention(
    node: str, value: object, units: int, spec: NodeSpec, like: Tensor
) -> Tensor | Callable:
    """An intervention value as a ``(units, *event)`` tensor; callables pass through.

    Scalars broadcast; tensors must broadcast to ``(units, *event)``; a categorical node also
    takes class indices.
    """
    if callable(value) and not torch.is_tensor(value):
        return value
    validation.check_tensor(f"the intervention on {node!r}", value, InterventionError)
    try:
        t = torch.as_tensor(value, device=like.device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise InterventionError(
            f"intervention on {node!r} must be a number, a tensor or a callable, "
            f"not {type(value).__name__}"
        ) from e
    if spec.num_classes is not None:
        t = validation.categorical_value(node, t, spec.num_classes, "do", InterventionError)
    t = t.to(dtype=like.dtype)
    target = torch.Size([units]) + spec.event_shape
    try:
        out = torch.broadcast_to(t, target) if t.dim() <= len(target) else None
    except RuntimeError:
        out = None
    if out is None:
        raise InterventionError(
            f"intervention on {node!r} has shape {tuple(t.shape)}, which does not broadcast to "
            f"(units, *event) = {tuple(target)}"
        )
    if not bool(torch.isfinite(out).all()):
        raise NonFiniteError(f"intervention on {node!r} has NaN or infinite values")
    return out


def node_specs_from_data(
    data: object, categorical: Mapping[str, int] | None = None
) -> dict[str, NodeSpec]:
    """Infer node specs from training data: columns ``x`` (scalar), ``x[i]`` (vector).

    ``categorical`` names categorical nodes and their class counts; pandas ``category`` columns
    are categorical too.
    """
    categorical = dict(categorical or {})
    validation.integer_columns(data, categorical)
    specs: dict[str, NodeSpec] = {}
    if isinstance(data, pd.DataFrame):
        vectors: dict[str, int] = {}
        for column in map(str, data.columns):
            if column.endswith("]") and "[" in column:
                base = column[: column.index("[")]
                vectors[base] = vectors.get(base, 0) + 1
            else:
                if isinstance(data[column].dtype, pd.CategoricalDtype):
                    categorical.setdefault(column, len(data[column].cat.categories))
                specs[column] = NodeSpec(torch.Size())
        for base, size in vectors.items():
            specs[base] = NodeSpec(torch.Size([size]))
    elif isinstance(data, Mapping):
        for node, value in data.items():
            shape = tuple(np.shape(value))
            if not shape:
                raise ShapeError(f"node {node!r} in the data has no units dimension")
            specs[node] = NodeSpec(torch.Size(shape[1:]))
    else:
        raise DataError(f"data must be a DataFrame or a dict, not {type(data).__name__}")
    for node, k in categorical.items():
        if node not in specs:
            raise UnknownNodeError(node, list(specs), "categorical")
        specs[node] = NodeSpec(torch.Size([k]), k)
    return specs
