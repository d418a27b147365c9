"""DCM's reference code (Chao et al. 2023) as a peer in this harness: load it, fit it, query it.

DCM is not a package: ``--dcm-code DIR`` points the benchmark scripts at a checkout of
github.com/patrickrchao/DiffusionBasedCausalModels (commit 8f3b577), and dowhy must be installed
(DCM's mechanisms are dowhy gcm ``InvertibleFunctionalCausalModel``s). Fitted here, DCM sees the
same training sample and answers the same counterfactual units as every other method of the run,
so its errors pair with ours seed by seed and unit by unit; the "Measured here" numbers of
``SCMS.md`` came from DCM's own script, with its own samples.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.methods import DoWhyANMMethod, Values

#: DCM's settings in its benchmark (``all_exp.py`` of its reference code, commit 8f3b577), on CPU
DCM_PARAMS = {
    "num_epochs": 500,
    "lr": 1e-4,
    "batch_size": 64,
    "hidden_dim": 64,
    "use_positional_encoding": False,
    "weight_decay": 0,
    "lambda_loss": 0,
    "clip": False,
    "verbose": False,
    "use_gpu_if_available": False,
}


def dcm_params(epochs: int | None = None) -> dict:
    """``DCM_PARAMS`` with ``epochs`` epochs where given."""
    return dict(DCM_PARAMS, **({} if epochs is None else {"num_epochs": epochs}))


def check_dcm_code(code: Path) -> str | None:
    """Why ``code`` is not a checkout of DCM's reference code, or None where it looks like one."""
    if not (Path(code) / "model" / "diffusion.py").is_file():
        return f"no model/diffusion.py (DCM's code) in {code}"
    return None


def load_dcm(code: Path) -> Callable:
    """DCM's ``create_model_from_graph`` from a checkout of its reference code at ``code``.

    Its module imports ``dowhy.gcm.graph.InvertibleFunctionalCausalModel``, which dowhy 0.8 had
    and dowhy 0.14 keeps in ``dowhy.gcm.causal_mechanisms``: where the first is missing, the
    second stands in for it."""
    try:
        from dowhy.gcm.graph import InvertibleFunctionalCausalModel  # noqa: F401
    except ImportError:
        import dowhy.gcm.causal_mechanisms as mechanisms

        sys.modules["dowhy.gcm.graph"] = mechanisms
    if str(code) not in sys.path:
        sys.path.insert(0, str(code))
    return importlib.import_module("model.diffusion").create_model_from_graph


class DCMMethod(DoWhyANMMethod):
    """DCM: one diffusion model per non-root node (DDIM abduction), the empirical distribution at
    the roots, fitted with ``dowhy.gcm.fit`` and queried through gcm, as DCM's own benchmark
    does; scalar nodes only.

    ``create``: DCM's model factory (:func:`load_dcm`); ``epochs``: DCM's epochs (None: 500)."""

    name = "dcm"

    def __init__(self, create: Callable, epochs: int | None = None):
        self.create, self.params = create, dcm_params(epochs)

    def fit(self, syn, data: Values, seed: int) -> None:
        from dowhy import gcm

        if any(len(s) for s in syn.event_shapes.values()):
            raise NotImplementedError("DCM's code takes scalar nodes only")
        self.gcm, self.syn = gcm, syn
        gcm.config.disable_progress_bars()
        np.random.seed(seed)  # DCM's code seeds neither; its batches and DDPM noise use both
        torch.manual_seed(seed)
        self.model = self.create(syn.graph, self.params)
        gcm.fit(self.model, syn.to_frame(data))
