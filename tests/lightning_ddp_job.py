"""A 2-process DDP job for ``test_lightning.py``: train, then sharded queries (run as a script).

``python lightning_ddp_job.py FOLDER``: reads ``FOLDER/setup.pt`` (data, options, the state of a
single-process fit), trains a fresh model with ``strategy="ddp"`` on 2 CPU processes (gloo), loads
the single-process state and answers sharded queries; rank 0 writes ``FOLDER/ddp.pt``.
Lightning starts the second rank by running this script again.
"""

import sys
from pathlib import Path


def build(frame):
    """The test SCM: x -> y, loc-scale mechanisms with a small network."""
    import networkx as nx
    import torch

    import pyro_scm as ps

    torch.manual_seed(0)
    return ps.SCM.from_graph(nx.DiGraph([("x", "y")]), frame, mechanism="locscale", hidden=(8,))


def main(folder: Path) -> None:
    import lightning as L
    import torch

    import pyro_scm as ps

    torch.set_num_threads(1)
    setup = torch.load(folder / "setup.pt", weights_only=False)
    frame, fit_options, queries = setup["frame"], setup["fit"], setup["queries"]
    trainer = L.Trainer(
        accelerator="cpu",
        strategy="ddp",
        devices=2,
        max_epochs=fit_options.pop("epochs"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(folder),
    )
    scm = build(frame)
    history = ps.lightning.fit(scm, frame, trainer=trainer, **fit_options)
    trained = {k: v.clone() for k, v in scm.state_dict().items()}

    reference = build(frame)
    reference.load(folder / "single.pt")
    factual, out = queries["factual"], {"history": history, "trained": trained}
    out["counterfactual"] = ps.lightning.counterfactual(
        reference, factual, do={"x": 1.0}, trainer=trainer, out_dir=folder / "cf", **queries["cf"]
    )
    out["backtrack"] = ps.lightning.backtrack(
        reference, factual, {"y": 2.0}, trainer=trainer, out_dir=folder / "bt", **queries["bt"]
    )
    out["mala"] = ps.lightning.backtrack(
        reference, factual, {"y": 2.0}, trainer=trainer, out_dir=folder / "mala", **queries["mala"]
    )
    # every chunk warns (one solver iteration cannot reach y = 50): rank 0 says so once
    out["unconverged"] = ps.lightning.backtrack(
        reference, factual, {"y": 50.0}, trainer=trainer, out_dir=folder / "u", **queries["unconv"]
    )
    out["sample"] = ps.lightning.sample(
        reference, queries["n"], {"x": 0.5}, trainer=trainer, out_dir=folder / "s", chunk_size=7
    )
    if trainer.is_global_zero:
        torch.save(out, folder / "ddp.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
