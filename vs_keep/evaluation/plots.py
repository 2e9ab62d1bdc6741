"""PNG plots of an evaluation: flicker columns over time (KEEP Fig. 5), identity over time (Fig. 7), fidelity and
temporal error per frame. matplotlib's object API with the Agg canvas: no global pyplot state, no display needed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .report import EvalResult

__all__ = ["flicker_image", "plot_fidelity", "plot_flicker", "plot_identity", "plot_temporal", "write_plots"]

log = logging.getLogger(__name__)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.savefig(str(path), bbox_inches="tight")
    return path


def flicker_image(columns: list[np.ndarray], rows: tuple[int, int]) -> np.ndarray:
    """Stack one pixel column per frame side by side (time runs left to right), each frame 3 px wide."""
    return np.repeat(np.stack([c[rows[0]:rows[1]] for c in columns], axis=1), 3, axis=1)


def plot_flicker(result: EvalResult, path: Path) -> Path:
    """Reference frame 0 with the sampled column in red, then the column over time for each clip."""
    order = [name for name in ("reference", "input", "restored") if result.columns.get(name)]
    fig = _figure(3.0 + 2.6 * len(order), 4.2)
    axes = fig.subplots(1, len(order) + 1)
    axes[0].imshow(result.thumbnail)
    y1, y2 = result.column_rows
    axes[0].plot([result.column_x, result.column_x], [y1, y2 - 1], color="red", linewidth=1.5)
    axes[0].set_title("reference, frame 0")
    axes[0].axis("off")
    for ax, name in zip(axes[1:], order):
        img = flicker_image(result.columns[name], result.column_rows)
        ax.imshow(img, aspect="auto", interpolation="nearest")
        ax.set_title(f"{name}: x={result.column_x}")
        n = len(result.columns[name])
        ticks = np.linspace(0, n - 1, min(n, 5)).round().astype(int)
        ax.set_xticks(ticks * img.shape[1] / n + img.shape[1] / n / 2)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.set_xlabel("frame")
        ax.set_yticks([])
    fig.suptitle("Temporal flicker: one pixel column per frame, stacked over time")
    return _save(fig, path)


def _series(ax, values: list[float], label: str, start: int = 0) -> None:
    arr = np.asarray(values, np.float64)
    x = np.arange(start, start + len(arr))
    finite = np.isfinite(arr)
    mean = float(arr[finite].mean()) if finite.any() else float("nan")
    ax.plot(x, arr, marker="." if len(arr) < 60 else None, linewidth=1.2, label=f"{label} (mean {mean:.4g})")


def _label(ax, ylabel: str, title: str | None = None) -> None:
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)


def plot_identity(result: EvalResult, path: Path) -> Path | None:
    """Identity similarity over time (and landmark distance when measured)."""
    ids_keys = [k for k in ("ids_arcface", "ids_dlib") if k in result.per_frame]
    has_akd = "akd" in result.per_frame
    if not ids_keys and not has_akd:
        return None
    panels = bool(ids_keys) + has_akd
    fig = _figure(8, 2.8 * panels)
    axes = iter(np.atleast_1d(fig.subplots(panels, 1, sharex=True)))
    if ids_keys:
        ax = next(axes)
        for key in ids_keys:
            label = key.replace("ids_", "IDS ") + (" (not ArcFace)" if key == "ids_dlib" else "")
            _series(ax, result.per_frame[key], label)
        _label(ax, "cosine similarity", "Identity similarity to the reference over time")
    if has_akd:
        ax = next(axes)
        _series(ax, result.per_frame["akd"], f"AKD {result.info.get('akd_landmarks')}")
        _label(ax, "landmark distance (px)", "Landmark distance to the reference over time")
    ax.set_xlabel("frame")
    return _save(fig, path)


def plot_fidelity(result: EvalResult, path: Path) -> Path:
    """Per-frame PSNR and SSIM (and LPIPS when computed)."""
    keys = [k for k in ("psnr", "ssim", "lpips") if k in result.per_frame]
    units = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS"}
    fig = _figure(8, 2.4 * len(keys))
    axes = np.atleast_1d(fig.subplots(len(keys), 1, sharex=True))
    for ax, key in zip(axes, keys):
        _series(ax, result.per_frame[key], key.upper())
        _label(ax, units[key])
    axes[0].set_title("Fidelity to the reference per frame")
    axes[-1].set_xlabel("frame")
    return _save(fig, path)


def plot_temporal(result: EvalResult, path: Path) -> Path | None:
    """Warping error between consecutive frames for restored, reference (and input)."""
    keys = [k for k in ("ewarp", "ewarp_reference", "ewarp_input") if k in result.per_frame]
    if not keys or not result.per_frame[keys[0]]:
        return None
    fig = _figure(8, 3)
    ax = fig.subplots()
    labels = {"ewarp": "restored", "ewarp_reference": "reference", "ewarp_input": "input"}
    for key in keys:
        _series(ax, result.per_frame[key], labels[key], start=1)
    ax.set_xlabel("frame t (warped from t-1)")
    _label(ax, "warping error (x1e-3)", "Temporal stability: masked warping error between consecutive frames")
    return _save(fig, path)


def write_plots(result: EvalResult, folder: str | Path) -> list[Path]:
    """Write every plot the result supports into `folder`; returns the files written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = [plot_flicker(result, folder / "flicker.png"), plot_fidelity(result, folder / "fidelity.png")]
    for fn, name in ((plot_identity, "identity.png"), (plot_temporal, "temporal.png")):
        out = fn(result, folder / name)
        if out is not None:
            written.append(out)
    return written
