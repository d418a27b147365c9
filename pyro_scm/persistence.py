"""Saving and loading fitted SCMs: weights, standardisation and the graph they belong to."""

from __future__ import annotations

import os

import torch

from .errors import PersistenceError
from .validation import unfitted_nodes

__all__ = ["FORMAT_VERSION", "load", "save"]

FORMAT_VERSION = 1


def _metadata(scm) -> dict:
    graph = scm.graph
    mechanisms = graph.graph["mechanisms"]
    return {
        "class": f"{type(scm).__module__}.{type(scm).__qualname__}",
        "nodes": {
            n: {
                "event_shape": list(graph.nodes[n]["event_shape"]),
                "mechanism": graph.nodes[n]["mechanism"],
                "parents": sorted(graph.predecessors(n)),
                "members": getattr(mechanisms[n], "members", 1),
            }
            for n in graph.nodes
        },
    }


def save(scm, path: str | os.PathLike) -> None:
    """Write ``scm``'s state (weights and buffers) with its graph and a format version."""
    payload = {
        "format": "pyro_scm",
        "format_version": FORMAT_VERSION,
        "metadata": _metadata(scm),
        "state_dict": {k: v.detach().cpu() for k, v in scm.state_dict().items()},
        "fitted": [n for n in scm.graph.nodes if n not in unfitted_nodes(scm)],
    }
    try:
        torch.save(payload, path)
    except (OSError, RuntimeError) as e:
        raise PersistenceError(f"cannot write {path}: {e}") from e


def load(scm, path: str | os.PathLike):
    """Load a file written by :func:`save` into ``scm`` (same class and graph); returns ``scm``.

    Raises:
        PersistenceError: the file is missing, corrupt, of another format version, or its model
            differs from ``scm`` (class, nodes, shapes, parents, or parameters).
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise PersistenceError(f"no saved model at {path}") from e
    except Exception as e:
        raise PersistenceError(f"{path} is not a readable pyro_scm file: {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != "pyro_scm":
        raise PersistenceError(f"{path} is not a pyro_scm file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise PersistenceError(
            f"{path} has format version {payload.get('format_version')}; "
            f"this pyro_scm reads version {FORMAT_VERSION}"
        )
    if not isinstance(payload.get("metadata"), dict) or "state_dict" not in payload:
        raise PersistenceError(f"{path} lacks the metadata or weights of a pyro_scm file")
    try:
        _check_metadata(payload["metadata"], _metadata(scm), path)
    except (KeyError, TypeError) as e:
        raise PersistenceError(f"{path} has incomplete metadata (no {e})") from e
    like = scm._like()
    state = {k: v.to(like.device) for k, v in payload["state_dict"].items()}
    try:
        scm.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise PersistenceError(f"the weights in {path} do not fit this model: {e}") from e
    fitted = payload.get("fitted", list(scm.graph.nodes))  # files without the list: all fitted
    for node, mechanism in scm.graph.graph["mechanisms"].items():
        mechanism.mark_fitted(node in fitted)
    return scm


#: metadata keys that files written before them lack, with the value they imply
_DEFAULTS = {"members": 1}


def _check_metadata(saved: dict, current: dict, path) -> None:
    if saved["class"] != current["class"]:
        raise PersistenceError(f"{path} holds a {saved['class']}, not a {current['class']}")
    if set(saved["nodes"]) != set(current["nodes"]):
        raise PersistenceError(
            f"{path} has nodes {sorted(saved['nodes'])}; this model has {sorted(current['nodes'])}"
        )
    for node, info in current["nodes"].items():
        for key, value in info.items():
            if saved["nodes"][node].get(key, _DEFAULTS.get(key)) != value:
                hint = (
                    " (build the model with members={node: count}, see SCM.from_graph)"
                    if key == "members"
                    else ""
                )
                raise PersistenceError(
                    f"node {node!r}: {key} is {saved['nodes'][node].get(key)} in {path} "
                    f"but {value} in this model{hint}"
                )
