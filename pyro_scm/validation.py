"""Validation every query goes through: arguments, values, fitted state, and the global guard.

One module holds the checks so that each query calls them in one line before it touches the
model:

- :func:`guarded` runs a query, ``fit``, graph derivation or ``log_prob`` under one process-wide
  re-entrant lock (Pyro's handler stack is a single global list, so concurrent handler-running
  calls would corrupt each other: threads serialise instead), hides enclosing Pyro handlers
  (a user's ``poutine.trace``/``condition`` neither sees nor changes a query) and leaves torch's
  default distribution validation as it found it;
- :func:`check_query` validates the counts and chunk sizes of a query and refuses a model whose
  learned mechanisms were never fitted (:class:`~pyro_scm.errors.NotFittedError`);
- :func:`categorical_value` admits class indices or exact one-hot rows only;
- :func:`shift_output` checks what a shift intervention returned (shape, finiteness);
- :func:`check_program` checks a provenance-tracked trace of ``model()``: every argument of a
  mechanism must derive from the program's sample sites or be a declared :func:`constant`.

Every failure raises a typed :mod:`pyro_scm.errors` error naming the node or argument.
"""

from __future__ import annotations

import functools
import math
import numbers
import threading
from collections.abc import Callable, Iterable, Mapping

import pyro.poutine as poutine
import torch
from pyro.ops.provenance import get_provenance
from pyro.poutine.messenger import Messenger
from torch import Tensor
from torch.distributions import Distribution

from .errors import (
    ArgumentError,
    GraphError,
    InterventionError,
    NonFiniteError,
    NotFittedError,
    SCMError,
)

__all__ = [
    "INDEX_COLUMNS",
    "LOCK",
    "categorical_value",
    "check_count",
    "check_fit_arguments",
    "check_fitted",
    "check_flag",
    "check_frame_columns",
    "check_program",
    "check_query",
    "check_tensor",
    "constant",
    "guarded",
    "integer_columns",
    "program_error",
    "shift_output",
    "unfitted_nodes",
]

#: The process-wide re-entrant lock held by every handler-running call of pyro_scm.
LOCK = threading.RLock()

#: Columns of :meth:`QueryResult.to_pandas` that index samples, not nodes; factual frames may
#: carry them (they are ignored unless a node has that name).
INDEX_COLUMNS = ("chain", "draw", "unit")

#: An integer column with at most this many distinct values must be declared categorical or
#: cast to float before :func:`~pyro_scm.builders.from_graph` models it.
MAX_INTEGER_LEVELS = 20


# -- the guard ----------------------------------------------------------------------------------


def guarded(fn: Callable) -> Callable:
    """Decorate a handler-running call: lock, hide enclosing Pyro handlers, keep global state.

    The lock is re-entrant, so guarded calls nest (a query deriving the graph, ``fit`` calling
    ``prepare``). Torch's default distribution validation is restored on exit.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with LOCK:
            validate = Distribution._validate_args
            try:
                with poutine.block():
                    return fn(*args, **kwargs)
            finally:
                Distribution.set_default_validate_args(validate)

    return wrapper


# -- arguments ----------------------------------------------------------------------------------


def check_flag(name: str, value: object) -> None:
    """Raise :class:`ArgumentError` unless ``value`` is a bool."""
    if not isinstance(value, bool):
        raise ArgumentError(f"{name} must be True or False, got {value!r}")


def check_count(name: str, value: object, minimum: int = 1, *, allow_none: bool = False) -> None:
    """Raise :class:`ArgumentError` unless ``value`` is an int (not a bool) >= ``minimum``."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        none = " or None" if allow_none else ""
        raise ArgumentError(f"{name} must be an int >= {minimum}{none}, got {value!r}")


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> None:
    """Raise :class:`ArgumentError` unless ``value`` is a finite real number in the range."""
    if value is None and allow_none:
        return
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (low is None or (value > low if low_open else value >= low))
        and (high is None or (value < high if high_open else value <= high))
    )
    if not ok:
        lo = "" if low is None else f"{low} {'<' if low_open else '<='} "
        hi = "" if high is None else f" {'<' if high_open else '<='} {high}"
        raise ArgumentError(f"{name} must be a finite number {lo}{name}{hi}, got {value!r}")


def check_query(scm, **counts: object) -> None:
    """Validate a query's arguments, then that every mechanism is fitted.

    ``counts``: ``num_samples``, ``n`` (ints >= 1) and ``chunk_size`` (None or an int >= 1).
    """
    for name, value in counts.items():
        check_count(name, value, allow_none=name == "chunk_size")
    check_fitted(scm)


def check_fit_arguments(
    *,
    epochs: object,
    batch_size: object,
    lr: object,
    weight_decay: object,
    val_fraction: object,
    patience: object,
    lr_decay: object,
    max_decays: object,
    seed: object,
    progress: object,
) -> None:
    """Validate every argument of :func:`~pyro_scm.fitting.fit` before it touches the model."""
    check_count("epochs", epochs)
    check_count("batch_size", batch_size)
    check_number("lr", lr, low=0, low_open=True)
    check_number("weight_decay", weight_decay, low=0)
    check_number("val_fraction", val_fraction, low=0, high=1, high_open=True)
    check_count("patience", patience, 0)
    check_number(
        "lr_decay", lr_decay, low=0, high=1, low_open=True, high_open=True, allow_none=True
    )
    check_count("max_decays", max_decays, 0)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise ArgumentError(f"seed must be an int or None, got {seed!r}")
    if not isinstance(progress, bool):
        raise ArgumentError(f"progress must be True or False, got {progress!r}")
    if torch.is_inference_mode_enabled():
        raise ArgumentError(
            "fit needs gradients but runs under torch.inference_mode(); call it outside"
        )


def check_tensor(name: str, value: object, error: type[SCMError]) -> None:
    """Refuse tensors without data (``meta`` device) before they are copied."""
    if torch.is_tensor(value) and value.is_meta:
        raise error(
            f"{name} is a tensor on the 'meta' device, which holds no values; "
            "pass a tensor on a real device (cpu, cuda, ...)"
        )


# -- values -------------------------------------------------------------------------------------


def categorical_value(
    node: str, t: Tensor, num_classes: int, where: str, error: type[SCMError]
) -> Tensor:
    """A categorical node's value as exact one-hot rows ``(..., K)``.

    Integer (or bool) tensors are class indices, except ``(..., K)`` tensors of at least two
    dimensions, which must already be one-hot; floating tensors must be exact one-hot rows
    ``(..., K)`` (entries 0 or 1, one 1 per row). Anything else raises ``error``.
    """
    expected = (
        f"categorical node {node!r} in {where} takes class indices (ints in "
        f"[0, {num_classes - 1}]) or exact one-hot rows of length {num_classes}"
    )
    integral = not t.is_floating_point() and not t.is_complex()
    if integral and not (t.dim() > 1 and t.shape[-1] == num_classes):
        if t.numel() and (t.min() < 0 or t.max() >= num_classes):
            raise error(f"{expected}; got class indices outside [0, {num_classes - 1}]")
        return torch.nn.functional.one_hot(t.long(), num_classes)
    if t.dim() == 0 or t.shape[-1] != num_classes:
        raise error(
            f"{expected}; got a {'float ' if not integral else ''}value of shape {tuple(t.shape)}"
            + (" (pass class indices as ints)" if not integral else "")
        )
    binary = (t == 0) | (t == 1)
    if not bool(binary.all()) or not bool((t.sum(-1) == 1).all()):
        bad = ~(binary.all(-1) & (t.sum(-1) == 1))
        row = t[bad][0].tolist()
        raise error(f"{expected}; {int(bad.sum())} rows are not one-hot, e.g. {row}")
    return t


def shift_output(node: str, out: object, before: Tensor, num_classes: int | None) -> Tensor:
    """Check a shift intervention's output against the value it was given.

    Returns the output as a tensor of ``before``'s shape, dtype and device.
    """
    if not torch.is_tensor(out):
        raise InterventionError(
            f"the shift intervention on {node!r} returned {type(out).__name__}; it must return a "
            f"tensor of the shape it was given, {tuple(before.shape)} = (*batch, *event)"
        )
    if out.shape != before.shape:
        raise InterventionError(
            f"the shift intervention on {node!r} returned shape {tuple(out.shape)}; it must "
            f"return the shape it was given, {tuple(before.shape)} = (*batch, *event)"
        )
    out = out.to(device=before.device, dtype=before.dtype)
    if not bool(torch.isfinite(out).all()):
        bad = ~torch.isfinite(out)
        raise NonFiniteError(
            f"the shift intervention on {node!r} returned NaN or infinite values "
            f"({int(bad.sum())} of {out.numel()} entries)"
        )
    if num_classes is not None:
        categorical_value(node, out, num_classes, "a shift intervention", InterventionError)
    return out


# -- data frames --------------------------------------------------------------------------------


def check_frame_columns(columns: Iterable[object], used: set[str], specs: Mapping, where: str):
    """Refuse columns of a frame that no node used: unknown nodes and surplus entries.

    ``chain``, ``draw`` and ``unit`` (the index columns of :meth:`QueryResult.to_pandas`) are
    allowed beside the nodes.
    """
    from .errors import ShapeError, UnknownNodeError

    for column in map(str, columns):
        if column in used or (column in INDEX_COLUMNS and column not in specs):
            continue
        base = column.split("[")[0]
        if base not in specs:
            raise UnknownNodeError(column, list(specs), where)
        shape = tuple(specs[base].event_shape)
        layout = (
            f"one column {base!r}"
            if specs[base].num_classes is not None or not shape
            else f"columns {base}[0] ... {base}[{math.prod(shape) - 1}]"
        )
        raise ShapeError(
            f"column {column!r} in {where} does not fit node {base!r} (event shape {shape}), "
            f"which takes {layout}; remove the surplus column"
        )


def integer_columns(data: object, categorical: Mapping[str, int]) -> None:
    """Refuse integer data with few distinct values that is not declared categorical.

    A column (or 1-d array) of ints or bools with at most ``MAX_INTEGER_LEVELS`` distinct values
    is ambiguous: class labels or counts. Declare it with ``categorical={node: K}`` or a pandas
    ``category`` dtype, or cast it to float to model it as continuous.
    """
    import numpy as np
    import pandas as pd

    from .errors import DataError

    if isinstance(data, pd.DataFrame):
        items = [(str(c), data[c]) for c in data.columns]
    elif isinstance(data, Mapping):
        items = list(data.items())
    else:
        return
    for node, value in items:
        base = node.split("[")[0]
        if base in categorical or isinstance(getattr(value, "dtype", None), pd.CategoricalDtype):
            continue
        if torch.is_tensor(value):
            if value.is_floating_point() or value.is_complex() or value.dim() != 1:
                continue
            levels = int(torch.unique(value).numel())
        else:
            array = np.asarray(value)
            if array.ndim != 1 or array.dtype.kind not in "iub":
                continue
            levels = len(np.unique(array))
        if levels <= MAX_INTEGER_LEVELS:
            raise DataError(
                f"node {node!r} holds integers with {levels} distinct values: declare it "
                f"categorical (categorical={{{node!r}: K}} or a pandas 'category' column), or "
                "cast it to float to model it as a continuous node"
            )


# -- the program --------------------------------------------------------------------------------


def constant(value: object) -> Tensor:
    """Declare a value that a mechanism takes besides its parents (not an edge of the graph).

    Graph derivation refuses mechanism arguments that do not derive from a sample site, since
    such an argument usually is a parent that lost its edge (``x.item()``, ``x.numpy()``);
    wrap a genuine constant in ``constant(...)`` (or register it as a buffer or parameter of the
    SCM) to pass it. Returns a tensor.

    Example:
        >>> import torch
        >>> constant(2.0)
        tensor(2.)
    """
    if torch.is_tensor(value):
        t = value
    else:
        try:
            t = torch.as_tensor(value, dtype=torch.get_default_dtype())
        except (TypeError, ValueError, RuntimeError) as e:
            raise ArgumentError(
                f"constant() takes a number, an array or a tensor, not {type(value).__name__}"
            ) from e
    t._pyro_scm_constant = True
    return t


def check_program(trace, scm) -> dict[str, object]:
    """Check a provenance-tracked trace of ``scm.model()``; returns node -> mechanism module.

    Every argument a mechanism was called with must carry the provenance of a sample site, or be
    a declared :func:`constant`, or a parameter or buffer of ``scm``.
    """
    from .mechanisms.base import MechanismDistribution

    sites = [s for s in trace.nodes.values() if s["type"] == "sample"]
    if not sites:
        raise GraphError(f"{type(scm).__name__}.model() samples no node; add pyro.sample sites")
    known = {id(t) for t in scm.parameters()} | {id(t) for t in scm.buffers()}
    mechanisms = {}
    for site in sites:
        fn = site["fn"]
        if isinstance(fn, MechanismDistribution):
            mechanisms[site["name"]] = fn.mechanism
        for i, p in enumerate(getattr(fn, "parents", None) or ()):
            if torch.is_tensor(p) and (
                get_provenance(p) or id(p) in known or getattr(p, "_pyro_scm_constant", False)
            ):
                continue
            raise GraphError(
                f"the mechanism of node {site['name']!r} was called with an argument (number "
                f"{i + 1}, a {type(p).__name__}) that derives from no sample site, so its edge "
                "would be lost: pass parents as the tensors pyro.sample returned (no .item(), "
                ".numpy(), float() or torch.tensor(...) of them); wrap a genuine constant in "
                "pyro_scm.constant(...) or register it as a buffer"
            )
    return mechanisms


def program_error(scm, error: Exception, after: str | None = None) -> SCMError:
    """Translate an exception raised by ``model()`` during graph derivation to a typed error.

    ``after``: the last node sampled before the failure, if any.
    """
    name = type(scm).__name__
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if after is not None:
        text += f"; raised after node {after!r} was sampled"
    if isinstance(error, NotImplementedError) and type(scm).model is _base_model():
        return GraphError(f"{name} has no program: write model() with one pyro.sample per node")
    if "Multiple sample sites named" in text or "Multiple pyro.sample sites named" in text:
        return GraphError(f"{name}.model() uses a site name twice ({text}); name each node once")
    if "ambiguous" in text or "cannot be converted to Scalar" in text or "only one element" in text:
        return GraphError(
            f"{name}.model() turns a batch of sample values into a Python value ({text}): the "
            "program runs on batches of units, so use tensor operations (torch.where instead of "
            "`if x > 0`, no .item() or float() of a sample value)"
        )
    return GraphError(f"running {name}.model() to derive the graph failed: {error}")


def _base_model():
    from .scm import SCM

    return SCM.model


# -- fitted state -------------------------------------------------------------------------------


def unfitted_nodes(scm) -> list[str]:
    """The nodes whose mechanisms have trainable parameters but were never fitted or loaded."""
    mechanisms = scm.graph.graph.get("mechanisms", {})
    return [n for n, m in mechanisms.items() if not getattr(m, "fitted", True)]


def check_fitted(scm) -> None:
    """Raise :class:`NotFittedError` naming the nodes whose mechanisms were never fitted."""
    nodes = unfitted_nodes(scm)
    if nodes:
        raise NotFittedError(
            f"the mechanisms of nodes {nodes} have trainable parameters that were never fitted "
            "or loaded; call scm.fit(data) or scm.load(path), or declare hand-set weights with "
            "scm.mark_fitted()"
        )


def mark_fitted(scm, nodes: Iterable[str] = ()):
    """Declare the mechanisms of ``nodes`` (all mechanisms when empty) fitted; returns ``scm``."""
    from .errors import UnknownNodeError
    from .mechanisms.base import Mechanism

    nodes = list(nodes)
    if not nodes:
        for module in scm.modules():
            if isinstance(module, Mechanism):
                module.mark_fitted()
        return scm
    mechanisms = scm.graph.graph.get("mechanisms", {})
    for node in nodes:
        if node not in mechanisms:
            raise UnknownNodeError(node, list(mechanisms), "mark_fitted")
        mechanisms[node].mark_fitted()
    return scm


def trace_program(
    scm, run: Callable[[], object], locate: Callable[[], object] | None = None
) -> tuple[object, dict[str, object]]:
    """Trace ``run()`` with provenance, without touching any global RNG; check the program.

    Returns ``(trace, node -> mechanism)``. Exceptions of ``model()`` become typed errors.
    ``locate``: the same program on one unit, run when ``run()`` fails to turn a batch into a
    Python value; if that run passes, the mechanism that received the converted value is named.
    """
    from .graph import trace_provenance

    devices = sorted({t.device.index or 0 for t in scm.parameters() if t.is_cuda})
    sampled: list[str] = []

    def recorded() -> None:
        with _Names(sampled):
            run()

    with torch.random.fork_rng(devices=devices):
        try:
            trace = trace_provenance(recorded)
        except SCMError:
            raise
        except Exception as e:
            error = program_error(scm, e, sampled[-1] if sampled else None)
            if locate is not None and "Python value" in str(error):
                try:
                    one = trace_provenance(locate)
                except Exception:
                    one = None
                if one is not None:
                    check_program(one, scm)  # names the mechanism whose edge was lost
            raise error from e
    return trace, check_program(trace, scm)


class _Names(Messenger):
    """Record the names of the sample sites a program reaches (to locate a failure)."""

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = names

    def _pyro_post_sample(self, msg: dict) -> None:
        self.names.append(msg["name"])


def mark_fitted_mechanisms(mechanisms: Iterable[object]) -> None:
    """Mark trained (or loaded) mechanism modules fitted."""
    for m in mechanisms:
        m.mark_fitted()


def check_parents(parents: Mapping[str, Iterable[str]]) -> None:
    """Check a declared ``node -> parents`` mapping: parents known, sampled first, no cycle."""
    order = list(parents)
    for i, node in enumerate(order):
        for p in parents[node]:
            if p not in parents:
                raise GraphError(f"node {node!r} has the parent {p!r}, which is not a node")
            if order.index(p) >= i:
                raise GraphError(
                    f"node {node!r} comes before its parent {p!r}: list the nodes in "
                    "topological order (parents first); a cycle has no such order"
                )


def unchecked_distributions(fn: Callable) -> Callable:
    """Decorate training: torch distributions skip their argument checks during the call.

    pyro_scm validates data before training; a diverging mechanism then yields NaN losses that
    ``fit`` detects per node, instead of a distribution's ``ValueError`` ending every node's
    training. The caller's setting is restored on exit.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        validate = Distribution._validate_args
        Distribution.set_default_validate_args(False)
        try:
            return fn(*args, **kwargs)
        finally:
            Distribution.set_default_validate_args(validate)

    return wrapper
