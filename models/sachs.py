"""The Sachs protein-signalling SCM: one spline flow per protein over the consensus DAG.

The 11 measured proteins (log concentrations) follow the 17-edge acyclic consensus network
(``pyro_scm.datasets.SACHS_DAG_EDGES``); the program is built from that graph with
``ps.SCM.from_graph``, one conditional flow per node given its parents.
"""

from __future__ import annotations

import networkx as nx
import pandas as pd

import pyro_scm as ps


def sachs_scm(
    data: pd.DataFrame,
    graph: nx.DiGraph,
    mechanism: str = "nsf",
    hidden: tuple[int, ...] = (32, 32),
) -> ps.GraphSCM:
    """An SCM over ``graph`` with a learned ``mechanism`` per protein, shaped by ``data``."""
    return ps.SCM.from_graph(graph, data, mechanism=mechanism, hidden=hidden)
