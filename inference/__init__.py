"""Runnable query programs over the example models, one per scenario.

Installed as ``pyro_scm.inference``; ``python -m pyro_scm.inference.<program>`` runs one.
"""
