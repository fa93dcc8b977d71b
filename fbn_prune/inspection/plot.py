"""Pictures of where the networks live and what was kept (``fbn-prune inspect --plot FILE``).

- A networks artifact: a layer x channel map of network membership (max |z| over runs and
  maps, the paper's score) at the channels' original indices, and per layer the
  number of channels in some network at |z| > threshold.
- A pruned checkpoint: a layer x channel map of kept (dark) and removed (light) channels in
  their original positions, and the kept width per layer against the original width.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fbn_prune.decompose.networks import ARTIFACT_FILE, Networks
from fbn_prune.errors import UserError
from fbn_prune.export.provenance import PROVENANCE_FILE
from fbn_prune.inspection.describe import read_checkpoint_record
from fbn_prune.select.scores import membership


def _pyplot():
    import matplotlib  # optional and slow to import: only when a picture is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def membership_image(artifact: Networks) -> torch.Tensor:
    """(layers, max width) float32 membership scores at the channels' original indices, NaN-padded."""
    widths = artifact.meta.widths
    img = torch.full((len(widths), max(widths)), float("nan"))
    for i, w in enumerate(widths):
        img[i, :w] = membership(artifact.maps(i)).float()
    return img


def kept_image(kept: dict[str, list[int]], widths_before: list[int]) -> torch.Tensor:
    """(layers, max original width) float32: 1 kept, 0 removed, NaN past a layer's width."""
    img = torch.full((len(widths_before), max(widths_before)), float("nan"))
    for i, w in enumerate(widths_before):
        img[i, :w] = 0.0
        img[i, torch.tensor(kept[str(i)], dtype=torch.long)] = 1.0
    return img


def plot_networks(folder: Path, out: Path, threshold: float = 3.0) -> None:
    art = Networks(folder)
    if art.meta.runs == 0:
        raise UserError(f"{folder} holds no ICA maps to plot (it was made for a method without networks).")
    img = membership_image(art)
    counts = [(img[i][~img[i].isnan()] > threshold).sum().item() for i in range(img.shape[0])]
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 0.18 * len(counts) + 2.2), gridspec_kw={"width_ratios": [3, 1]})
    im = a.imshow(img.numpy(), aspect="auto", cmap="magma", interpolation="nearest")
    a.set_xlabel("FFN channel (original index)")
    a.set_ylabel("layer")
    a.set_title(f"network membership: max |z| over {art.meta.runs} runs x {art.meta.components} maps")
    fig.colorbar(im, ax=a, fraction=0.03)
    b.barh(range(len(counts)), counts, color="tab:purple")
    b.invert_yaxis()
    b.set_xlabel(f"channels with |z| > {threshold:g}")
    b.set_title("in some network")
    fig.suptitle(f"{art.meta.model}: functional networks ({art.meta.calibration.get('source')})", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_checkpoint(folder: Path, out: Path) -> None:
    info = read_checkpoint_record(folder)  # checked: kept channels fit the original widths
    kept = info.kept
    before = info.original_widths
    if not kept or not before:
        raise UserError(f"{folder}/{PROVENANCE_FILE} does not record the kept channels per layer.")
    img = kept_image(kept, before)
    widths = info.widths
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 0.18 * len(widths) + 2.2), gridspec_kw={"width_ratios": [3, 1]})
    a.imshow(img.numpy(), aspect="auto", cmap="Greys", vmin=-0.3, vmax=1.0, interpolation="nearest")
    a.set_xlabel("FFN channel (original index)")
    a.set_ylabel("layer")
    a.set_title("kept (dark) and removed (light) channels")
    b.barh(range(len(widths)), before, color="lightgrey", label="original")
    b.barh(range(len(widths)), [len(kept[str(i)]) for i in range(len(widths))], color="tab:blue", label="kept")
    b.invert_yaxis()
    b.set_xlabel("channels")
    b.set_title("width per layer")
    b.legend(fontsize=7, loc="lower right")
    sel = info.selection
    fig.suptitle(f"{info.base_model}: {sel['method']}, {sel['achieved_ratio']:.1%} of FFN channels removed "
                 f"({info.layout} layout)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot(path: str, out: str) -> Path:
    """Draw ``path`` (a pruned checkpoint or a networks artifact) to the image file ``out`` (.png/.svg/.pdf)."""
    p, target = Path(path), Path(out)
    if target.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UserError(f"--plot needs a .png, .svg or .pdf file name, got {out}.")
    if not target.parent.exists():
        raise UserError(f"folder {target.parent} does not exist.")
    if not p.is_dir():
        raise UserError(f"{path} is a file, not an fbn_prune checkpoint or a networks artifact; nothing to plot.")
    if (p / PROVENANCE_FILE).exists():
        plot_checkpoint(p, target)
    elif (p / ARTIFACT_FILE).exists():
        plot_networks(p, target)
    else:
        raise UserError(f"{path} is not an fbn_prune checkpoint or a networks artifact; nothing to plot.")
    return target
