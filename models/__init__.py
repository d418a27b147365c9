"""Example SCMs written as users write them, one Pyro program per file.

Installed as ``pyro_scm.models``.
"""
