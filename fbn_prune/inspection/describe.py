"""Human summaries of what fbn_prune reads and writes: checkpoints, networks artifacts, model folders.

Every record is validated as it is read (:func:`read_checkpoint_record`, networks.read_meta): a damaged
file is a UserError that names it and says how to get a good one, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

from fbn_prune.config.layouts import layout_for
from fbn_prune.decompose.networks import ARTIFACT_FILE, Networks, read_json
from fbn_prune.errors import UserError
from fbn_prune.export.padding import padding_note
from fbn_prune.export.provenance import PROVENANCE_FILE, Provenance

RESELECT = "it is damaged; write the checkpoint again (fbn-prune prune or select, --overwrite)"
# fbn_prune.json: key -> (accepted types, what it must be); what inspect and --plot read
RECORD_TYPES = {
    "layout": ((str,), "a string"),
    "base_model": ((str,), "a string"),
    "base_model_type": ((str,), "a string"),
    "params": ((dict,), "a mapping"),
    "selection": ((dict,), "a mapping"),
    "widths": ((list,), "a list"),
    "calibration": ((dict,), "a mapping"),
}
NUMBER = (int, float)


def describe_folder(path: str) -> tuple[str, dict]:
    """(text summary, full record) of ``path``. UserError when it is none of the known kinds or is damaged."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path} does not exist.")
    if not p.is_dir():
        raise UserError(f"{path} is a file; inspect takes a folder: an fbn_prune checkpoint, a networks artifact "
                        "or a model folder.")
    if (p / PROVENANCE_FILE).exists():
        return _checkpoint(p)
    if (p / ARTIFACT_FILE).exists():
        return _networks(p)
    if (p / "config.json").exists():
        cfg = read_json(p / "config.json", "a model config", "the model folder is damaged; download or save it again")
        if not isinstance(cfg, dict):
            raise UserError(f"{p / 'config.json'} is not a JSON object: the model folder is damaged; "
                            "download or save it again.")
        return (f"{path}: model folder ({cfg.get('model_type')}, not written by fbn_prune)", cfg)
    raise UserError(f"{path} is not an fbn_prune checkpoint, a networks artifact or a model folder.")


def read_checkpoint_record(folder: Path) -> Provenance:
    """A checkpoint's fbn_prune.json, checked for what inspect and --plot read (keys, types, widths, kept channels)."""
    path = Path(folder) / PROVENANCE_FILE
    info = read_json(path, "the checkpoint's provenance", RESELECT)
    if not isinstance(info, dict):
        raise UserError(f"{path} is not a JSON object: {RESELECT}.")
    for key, (types, what) in RECORD_TYPES.items():
        if key not in info:
            raise UserError(f"{path} lacks the key {key!r}: {RESELECT}.")
        if not isinstance(info[key], types):
            raise UserError(f"{path}: {key!r} must be {what}: {RESELECT}.")
    _need(path, info["params"], "params", {"before": int, "after": int})
    _need(path, info["selection"], "selection", {"method": str, "achieved_ratio": NUMBER})
    _need(path, info["calibration"], "calibration", {"source": str, "tokens": int})
    if info["params"]["before"] <= 0:
        raise UserError(f"{path}: params.before must be positive: {RESELECT}.")
    widths = info["widths"]
    if not widths or not all(_int(w) and w >= 0 for w in widths):
        raise UserError(f"{path}: 'widths' must be a non-empty list of channel counts: {RESELECT}.")
    if info["selection"].get("ratio") is None and not isinstance(info["selection"].get("threshold"), NUMBER):
        raise UserError(f"{path}: 'selection' records neither a ratio nor a threshold: {RESELECT}.")
    for key in ("kept", "original_widths"):
        if key in info:
            _kept(path, info)
            break
    return Provenance.from_dict(info)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _need(path: Path, d: dict, name: str, keys: dict) -> None:
    for key, types in keys.items():
        if not isinstance(d.get(key), types) or isinstance(d.get(key), bool):
            raise UserError(f"{path}: '{name}.{key}' is missing or of the wrong type: {RESELECT}.")


def _kept(path: Path, info: dict) -> None:
    """'kept' ({layer: sorted channel indices}) must fit 'original_widths' and 'widths'."""
    kept, before = info.get("kept"), info.get("original_widths")
    if not isinstance(kept, dict) or not isinstance(before, list) or not all(_int(w) and w > 0 for w in before):
        raise UserError(f"{path}: 'kept' must map each layer to its channels and 'original_widths' list the "
                        f"widths before pruning: {RESELECT}.")
    for i, w in enumerate(before):
        k = kept.get(str(i))
        if not isinstance(k, list) or not all(_int(c) and 0 <= c < w for c in k) or len(set(k)) != len(k):
            raise UserError(f"{path}: 'kept' of layer {i} must be distinct channel indices below {w}: {RESELECT}.")
    if len(before) != len(info["widths"]):
        raise UserError(f"{path}: 'widths' and 'original_widths' disagree on the number of layers: {RESELECT}.")


def _checkpoint(p: Path) -> tuple[str, dict]:
    info = read_checkpoint_record(p)
    prm, sel, ver = info.params, info.selection, info.verification or {}
    ver = ver if isinstance(ver, dict) else {}
    widths = info.widths
    timings = info.timings if isinstance(info.timings, dict) else {}
    effective = prm["after_effective"] if isinstance(prm.get("after_effective"), int) else prm["after"]
    lines = [
        f"{p}: fbn_prune checkpoint ({info.layout} layout)",
        f"  base model     {info.base_model} ({info.base_model_type})",
        f"  method         {sel['method']}, {sel['achieved_ratio']:.1%} of FFN channels removed"
        + (f" (asked {sel['ratio']:.1%} of {sel.get('ratio_of', 'ffn')})" if isinstance(sel.get("ratio"), NUMBER)
           else f" (|z| > {sel.get('threshold')})"),
        (f"  parameters     {prm['before']:,} -> {prm['after']:,} stored ({1 - prm['after'] / prm['before']:.1%} fewer), "
         f"{effective:,} effective ({1 - effective / prm['before']:.1%} fewer; zero padding not counted)"),
        f"  widths         min {min(widths)}, max {max(widths)}, per layer: {' '.join(map(str, widths))}",
        f"  calibration    {info.calibration['source']} ({info.calibration['tokens']:,} tokens)",
        (f"  verification   {'passed' if info.verified is True else 'FAILED'}: max relative logit diff "
         f"{_num(ver.get('relative_diff')):.2e}, top-1 agreement {_num(ver.get('top1_agreement')):.4f}"),
        "  timings        " + _timings(timings),
    ]
    stored = info.stored_widths if info.has("stored_widths") else widths
    original = info.original_widths if info.has("original_widths") else widths
    if note := padding_note(info.layout, widths, stored, original):
        lines.append(f"  WARNING        {note}")
    if layout_for(info.layout).remote_code:
        lines.append("  load with      AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)")
    else:
        lines.append("  load with      AutoModelForCausalLM.from_pretrained(path)")
    lines.append("  serve with     " + layout_for(info.layout).serving.format(repo="path"))
    return "\n".join(lines), info.to_dict()


def _num(v) -> float:
    return float(v) if isinstance(v, NUMBER) and not isinstance(v, bool) else float("nan")


def _timings(t: dict) -> str:
    return ", ".join(f"{k.removesuffix('_s')} {_num(v):.1f}s" for k, v in t.items())


def _networks(p: Path) -> tuple[str, dict]:
    art = Networks(p)  # validates networks.json
    meta = art.meta
    done = len(list((p / "maps").glob("*.safetensors"))) if (p / "maps").is_dir() else 0
    total = len(meta.widths) * meta.runs
    tokens = meta.calibration.get("tokens")
    s = meta.settings
    lines = [
        f"{p}: networks artifact of {meta.model} ({meta.model_type})",
        f"  layers         {len(meta.widths)} (FFN widths {min(meta.widths)}..{max(meta.widths)})",
        f"  decomposition  {meta.runs} runs x {meta.components} components; {done}/{total} done",
        f"  calibration    {meta.calibration.get('source')} ("
        + (f"{tokens:,} tokens)" if _int(tokens) else "? tokens)"),
        "  settings       " + (f"seed {s.seed}, {s.dtype}, seq-len {s.seq_len}, ICA {s.ica.engine} fun={s.ica.fun} "
                                f"tol={s.ica.tol:g} max_iter={s.ica.max_iter}, key {s.key()}"
                                if s is not None else "not recorded (made by an older fbn_prune)"),
        "  timings        " + _timings(meta.timings),
    ]
    record = meta.__dict__ | {"settings": s.to_dict() if s is not None else None}
    return "\n".join(lines), record
