"""Human summaries of what fbn_prune reads and writes: checkpoints, networks artifacts, model folders."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import UserError
from .export import PROVENANCE_FILE
from .layouts import padding_note
from .networks import ARTIFACT_FILE


def describe(path: str) -> tuple[str, dict]:
    """(text summary, full record) of ``path``. UserError when it is none of the known kinds."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path} does not exist.")
    if (p / PROVENANCE_FILE).is_file():
        return _checkpoint(p)
    if (p / ARTIFACT_FILE).is_file():
        return _networks(p)
    if (p / "config.json").is_file():
        cfg = json.loads((p / "config.json").read_text())
        return (f"{path}: model folder ({cfg.get('model_type')}, not written by fbn_prune)", cfg)
    raise UserError(f"{path} is not an fbn_prune checkpoint, a networks artifact or a model folder.")


def _checkpoint(p: Path) -> tuple[str, dict]:
    info = json.loads((p / PROVENANCE_FILE).read_text())
    prm, sel, ver = info["params"], info["selection"], info.get("verification", {})
    widths = info["widths"]
    effective = prm.get("after_effective", prm["after"])
    lines = [
        f"{p}: fbn_prune checkpoint ({info['layout']} layout)",
        f"  base model     {info['base_model']} ({info['base_model_type']})",
        f"  method         {sel['method']}, {sel['achieved_ratio']:.1%} of FFN channels removed"
        + (f" (asked {sel['ratio']:.1%} of {sel['ratio_of']})" if sel.get("ratio") is not None else f" (|z| > {sel['threshold']})"),
        (f"  parameters     {prm['before']:,} -> {prm['after']:,} stored ({1 - prm['after'] / prm['before']:.1%} fewer), "
         f"{effective:,} effective ({1 - effective / prm['before']:.1%} fewer; zero padding not counted)"),
        f"  widths         min {min(widths)}, max {max(widths)}, per layer: {' '.join(map(str, widths))}",
        f"  calibration    {info['calibration']['source']} ({info['calibration']['tokens']:,} tokens)",
        f"  verification   {'passed' if info.get('verified') else 'FAILED'}: max relative logit diff "
        f"{ver.get('relative_diff', float('nan')):.2e}, top-1 agreement {ver.get('top1_agreement', float('nan')):.4f}",
        "  timings        " + ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in info.get("timings", {}).items()),
    ]
    if note := padding_note(info["layout"], widths, info.get("stored_widths", widths), info.get("original_widths", widths)):
        lines.append(f"  WARNING        {note}")
    if info["layout"] == "exact":
        lines.append("  load with      AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)")
    else:
        lines.append("  load with      AutoModelForCausalLM.from_pretrained(path)")
    return "\n".join(lines), info


def _networks(p: Path) -> tuple[str, dict]:
    meta = json.loads((p / ARTIFACT_FILE).read_text())
    done = len(list((p / "maps").glob("*.safetensors"))) if (p / "maps").is_dir() else 0
    total = len(meta["widths"]) * meta["runs"]
    lines = [
        f"{p}: networks artifact of {meta['model']} ({meta['model_type']})",
        f"  layers         {len(meta['widths'])} (FFN widths {min(meta['widths'])}..{max(meta['widths'])})",
        f"  decomposition  {meta['runs']} runs x {meta['components']} components; {done}/{total} done",
        f"  calibration    {meta['calibration']['source']} ({meta['calibration']['tokens']:,} tokens)",
        "  timings        " + ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in meta.get("timings", {}).items()),
    ]
    return "\n".join(lines), meta
