"""The Sachs et al. (2005) protein-signalling data, read offline from the ``cdt`` package's files.

``cdt`` is never imported (its import pulls GPUtil, scikit-learn, ...): only its data files are
read, so ``pip install --no-deps cdt`` is enough. The table has 7466 cells × 11 phosphoproteins;
the cells pool all of Sachs' stimulation and inhibition conditions, without condition labels.

Example:
    >>> frame, graph = load_sachs(log=True)
    >>> frame.shape, graph.number_of_edges()
    ((7466, 11), 18)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

import networkx as nx
import numpy as np
import pandas as pd

from ..errors import DataError

SACHS_NODES = ["praf", "pmek", "plcg", "PIP2", "PIP3", "p44/42", "pakts473", "PKA", "PKC", "P38",
               "pjnk"]  # fmt: skip
"""Column names of the data, as in ``cdt`` (Raf, Mek, PLCγ, PIP2, PIP3, Erk, Akt, PKA, PKC,
P38, Jnk)."""

SACHS_DAG_EDGES = [
    ("plcg", "PIP2"), ("plcg", "PIP3"), ("PIP3", "PIP2"),
    ("PKC", "PKA"), ("PKC", "pjnk"), ("PKC", "P38"), ("PKC", "praf"), ("PKC", "pmek"),
    ("PKA", "p44/42"), ("PKA", "pjnk"), ("PKA", "praf"), ("PKA", "pmek"), ("PKA", "pakts473"),
    ("PKA", "P38"),
    ("praf", "pmek"), ("pmek", "p44/42"), ("p44/42", "pakts473"),
]  # fmt: skip
"""The 17-edge acyclic consensus network (bnlearn's ``sachs``, DCM's Sachs SCM)."""

DATA_FILE = "cyto_full_data.csv"
GRAPH_FILE = "cyto_full_target.csv"


class SachsUnavailableError(DataError, ImportError):
    """The ``cdt`` package, whose files hold the Sachs data, is not installed."""


def sachs_files() -> tuple[Path, Path]:
    """Paths of the data and graph files inside the installed ``cdt`` package (not imported).

    Raises:
        SachsUnavailableError: ``cdt`` is not installed or lacks the files.
    """
    spec = importlib.util.find_spec("cdt")
    if spec is None or not spec.submodule_search_locations:
        raise SachsUnavailableError(
            "the Sachs data are read from the files of the `cdt` package, which is not "
            "installed; run `pip install --no-deps cdt` (its dependencies are not needed)"
        )
    resources = Path(next(iter(spec.submodule_search_locations))) / "data" / "resources"
    paths = resources / DATA_FILE, resources / GRAPH_FILE
    for path in paths:
        if not path.is_file():
            raise SachsUnavailableError(f"`cdt` is installed but {path} is missing; reinstall it")
    return paths


def load_sachs(
    *,
    log: bool = True,
    standardize: bool = False,
    graph: Literal["cdt", "dag"] = "cdt",
) -> tuple[pd.DataFrame, nx.DiGraph]:
    """The Sachs table ``(7466, 11)`` and a graph over its columns.

    Args:
        log: take the natural log (raw values are concentrations in [1, 9058], heavy-tailed).
        standardize: then centre each column and divide by its standard deviation (ddof 0).
        graph: ``"cdt"``: the 18-edge consensus graph shipped with ``cdt``; it is cyclic
            (PIP3 → plcg → PIP2 → PIP3). ``"dag"``: the 17-edge acyclic consensus network
            :data:`SACHS_DAG_EDGES` used as an SCM graph by DCM.

    Raises:
        SachsUnavailableError: ``cdt`` is not installed.
        DataError: unknown ``graph``, or the file is malformed.
    """
    if graph not in ("cdt", "dag"):
        raise DataError(f"unknown Sachs graph {graph!r}; available: ['cdt', 'dag']")
    data_path, graph_path = sachs_files()
    frame = pd.read_csv(data_path).astype(np.float64)
    if list(frame.columns) != SACHS_NODES:
        raise DataError(f"{data_path} has columns {list(frame.columns)}, expected {SACHS_NODES}")
    if log:
        if (frame <= 0).any().any():
            raise DataError(f"{data_path} has non-positive values; cannot take the log")
        frame = np.log(frame)
    if standardize:
        frame = (frame - frame.mean()) / frame.std(ddof=0)
    if graph == "cdt":
        edges = pd.read_csv(graph_path)
        pairs = list(zip(edges["Cause"], edges["Effect"], strict=True))
    else:
        pairs = SACHS_DAG_EDGES
    digraph = nx.DiGraph()
    digraph.add_nodes_from(SACHS_NODES)
    digraph.add_edges_from(pairs)
    return frame, digraph
