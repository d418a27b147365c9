"""The queries of Pearl's ladder on any SCM program, one module per rung.

- :mod:`.plan`: which nodes a query abducts, recomputes and returns as given (from the graph);
- :mod:`.interventional`: observational and interventional samples, ``log_prob``;
- :mod:`.counterfactual`: abduction, action, prediction;
- :mod:`.backtracking`: backtracking counterfactuals (delegates to :mod:`pyro_scm.infer`).
"""

from .backtracking import backtrack
from .counterfactual import abduct, counterfactual, predict
from .interventional import Intervened, log_prob, run_program, sample
from .plan import Plan, plan_counterfactual

__all__ = [
    "Intervened",
    "Plan",
    "abduct",
    "backtrack",
    "counterfactual",
    "log_prob",
    "plan_counterfactual",
    "predict",
    "run_program",
    "sample",
]
