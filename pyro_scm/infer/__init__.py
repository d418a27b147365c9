"""Inference over exogenous noise: backtracking counterfactuals (mode and stochastic DeepBC)."""


def backtrack(*args, **kwargs):
    """Not implemented yet."""
    raise NotImplementedError("backtracking counterfactuals are not implemented yet")
