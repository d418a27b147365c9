"""Command-line arguments shared by the programs in this folder."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """A parser with the shared options: --quick, --out, --device, --epochs, --seed, progress."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--epochs", type=int, default=None, help="training epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def check(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Reject a CUDA device on a machine without one, and fewer than one epoch."""
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available on this machine")
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be at least 1")
    return args
