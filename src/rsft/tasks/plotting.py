"""PNG summaries of a run (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from rsft.batch import Batch  # noqa: E402

MAX_POINTS = 5000


def _limits(points: torch.Tensor) -> tuple[float, float, float, float]:
    lo = torch.quantile(points, 0.005, dim=0)
    hi = torch.quantile(points, 0.995, dim=0)
    pad = 0.1 * (hi - lo)
    return float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]), float(hi[1] + pad[1])


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


@torch.no_grad()
def plot_density_run(path: Path, target: Any, accepted: Batch | None, model: Any) -> Path:
    """Left: accepted samples; middle: target density; right: model density (first two coordinates)."""
    generator = torch.Generator().manual_seed(0)
    reference = target.sample(MAX_POINTS, generator).cpu() if hasattr(target, "sample") else None
    pts = accepted["x"][:MAX_POINTS].detach().cpu() if accepted is not None else reference
    x0, x1, y0, y1 = _limits(reference if reference is not None else pts)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    if pts is not None:
        axes[0].scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
    axes[0].set_title(f"accepted samples (n={0 if pts is None else len(pts)} shown)")
    grid_n = 150
    gx, gy = torch.meshgrid(torch.linspace(x0, x1, grid_n), torch.linspace(y0, y1, grid_n), indexing="xy")
    flat = torch.stack([gx.flatten(), gy.flatten()], 1)
    dim = getattr(target, "dim", 2)
    if dim == 2:
        lp = target.to("cpu").log_prob(flat) if hasattr(target, "to") else target.log_prob(flat)
        axes[1].contourf(gx, gy, lp.exp().reshape(grid_n, grid_n), levels=30)
        axes[1].set_title("target density")
    else:
        axes[1].scatter(reference[:, 0], reference[:, 1], s=1, alpha=0.4) if reference is not None else None
        axes[1].set_title("exact target samples (first 2 coords)")
    if model is not None and hasattr(model, "log_prob") and dim == 2:
        device = next(model.parameters()).device
        lq = model.log_prob(flat.to(device)).cpu()
        axes[2].contourf(gx, gy, lq.exp().reshape(grid_n, grid_n), levels=30)
        axes[2].set_title("model density")
    elif model is not None and hasattr(model, "sample_with_log_prob"):
        device = next(model.parameters()).device
        xs, _ = model.sample_with_log_prob(MAX_POINTS, torch.Generator(device).manual_seed(0))
        xs = xs.cpu()
        axes[2].scatter(xs[:, 0], xs[:, 1], s=1, alpha=0.4)
        axes[2].set_title("model samples (first 2 coords)")
    for ax in axes:
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_aspect("equal", adjustable="box")
    return _save(fig, path)


@torch.no_grad()
def plot_sectors_run(path: Path, task: Any, accepted: Batch | None, model: Any) -> Path | None:
    """Accepted candidates (first two coordinates) coloured by label, and the model's decisions."""
    if accepted is None or accepted["x"].shape[0] == 0:
        return None
    x = accepted["x"][:MAX_POINTS].detach().cpu()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    axes[0].scatter(x[:, 0], x[:, 1], c=task.labels(x), s=2, cmap="tab10")
    axes[0].set_title("accepted candidates, true sector")
    device = next(model.parameters()).device
    pred = model(accepted["x"][:MAX_POINTS].to(device)).argmax(1).cpu()
    axes[1].scatter(x[:, 0], x[:, 1], c=pred, s=2, cmap="tab10")
    axes[1].set_title("model's predicted sector")
    for ax in axes:
        ax.set_aspect("equal", adjustable="box")
    return _save(fig, path)


def plot_acceptance(path: Path, rows: list[dict[str, Any]]) -> Path | None:
    """Acceptance rate per sampling round (log scale), with β for tempered rounds (``epochs.jsonl`` rows).

    Rounds at β < 1 sample the tempered target, not p: they are drawn hollow, β = 1 rounds filled.
    """
    rounds = [r for r in rows if "sampling/acceptance_rate" in r]
    if not rounds:
        return None
    epochs = [int(r["epoch"]) for r in rounds]
    rates = [float(r["sampling/acceptance_rate"]) for r in rounds]
    betas = [float(r.get("sampling/beta", 1.0)) for r in rounds]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    exact = [b == 1.0 for b in betas]
    ax.plot(epochs, rates, color="C0", lw=1)
    ax.scatter(
        [e for e, x in zip(epochs, exact) if x],
        [r for r, x in zip(rates, exact) if x],
        color="C0",
        label="β = 1 (exact samples of p)",
        zorder=3,
    )
    ax.scatter(
        [e for e, x in zip(epochs, exact) if not x],
        [r for r, x in zip(rates, exact) if not x],
        facecolors="none",
        edgecolors="C0",
        label="β < 1 (tempered)",
        zorder=3,
    )
    ax.set_yscale("log")
    ax.set_xlabel("round (epoch)")
    ax.set_ylabel("acceptance rate")
    if any(b != 1.0 for b in betas) or any("sampling/beta" in r for r in rounds):
        twin = ax.twinx()
        twin.plot(epochs, betas, color="C1", ls="--", label="β")
        twin.set_ylim(0, 1.05)
        twin.set_ylabel("β", color="C1")
    ax.legend(loc="lower right")
    return _save(fig, path)
