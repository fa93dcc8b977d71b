"""``--dry-run``: what a run would do and need, without loading weights or writing anything.

The plan reads the model's config (an empty "meta" model gives the exact layer widths and
parameter count), tokenizes the calibration documents (cheap; self-generated text is
estimated as samples x seq_len), and turns them into disk, RAM and time figures with the
rough rates of resources.py. Capture disk is exact: tokens x sum(widths) x 2 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import init_empty_weights
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from fbn_prune._runtime import resources as res
from fbn_prune._runtime.devices import resolve_ica_device
from fbn_prune._runtime.dtypes import DTYPE_BYTES
from fbn_prune._runtime.sizes import gb, parse_size
from fbn_prune.config.layouts import layout_for
from fbn_prune.config.recipe import Recipe
from fbn_prune.decompose import cache as netcache
from fbn_prune.decompose.jobs import resolve_jobs
from fbn_prune.errors import UserError
from fbn_prune.models.arch import adapter_for
from fbn_prune.models.sources import resolve
from fbn_prune.select.methods import check_selection
from fbn_prune.texts import calibration as calib
from fbn_prune.texts.generated import GENERATED


def model_shape(config, widths: list[int], params: int, dtype: str) -> res.Shape:
    """The sizes the estimates need, from a transformers config and the FFN widths."""
    hidden = int(getattr(config, "hidden_size", None) or getattr(config, "n_embd"))
    heads = int(getattr(config, "num_attention_heads", None) or getattr(config, "n_head"))
    return res.Shape(params=params, hidden=hidden, heads=heads, widths=tuple(widths), dtype_bytes=DTYPE_BYTES[dtype])


def compute_device(recipe: Recipe) -> str:
    """Where the model runs: ``cuda`` or ``cpu`` (a device_map counts as CUDA when a GPU is present)."""
    if recipe.device_map:
        return "cpu" if recipe.device_map == "cpu" or not torch.cuda.is_available() else "cuda"
    if recipe.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return recipe.device


@dataclass
class Plan:
    """Everything ``--dry-run`` prints. Sizes in bytes, times in seconds."""

    model: str
    model_type: str
    params: int
    dtype: str
    placement: str
    widths: list[int]
    calibration: str
    documents: int
    tokens: int
    tokens_exact: bool
    seq_len: int
    batch_size: int
    runs: int
    components: int
    ica_jobs: int
    workers: int
    ica_device: str
    engine: str
    networks_dir: str
    out: str | None
    disk: dict[str, int] = field(default_factory=dict)
    free: int = 0
    ram: dict[str, int] = field(default_factory=dict)
    gpu: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    ranks: int = 1
    """torch.distributed processes; above 1, tokens, disk, RAM and time are those of the busiest rank."""
    rank_share: dict[str, int] = field(default_factory=dict)
    """The busiest rank's share: ``runs``, ``tokens``, ``ica_jobs``, ``layers`` (of the eliminations)."""

    def text(self) -> str:
        w = self.widths
        width_text = f"{w[0]:,}" if len(set(w)) == 1 else f"{min(w):,}..{max(w):,}"
        tokens = f"{self.tokens:,}" if self.tokens_exact else f"at most {self.tokens:,} (self-generated text, estimated)"
        total_disk = sum(self.disk.values())
        lines = [
            "plan (dry run: no weights loaded, nothing captured or written)",
            f"  model          {self.model} ({self.model_type}, {self.params / 1e6:,.1f}M parameters, {self.dtype}, "
            f"{self.placement})",
            f"  layers         {len(w)} FFN layers x {width_text} channels ({sum(w):,} in all)",
            f"  calibration    {self.calibration}: {self.documents:,} documents, {tokens} tokens "
            f"(seq_len {self.seq_len}, batch {self.batch_size} documents)",
        ]
        if self.ranks > 1:
            r = self.rank_share
            lines.append(f"  ranks          {self.ranks} processes; per rank (the busiest): capture {r['runs']} of "
                         f"{self.runs or r['all_runs']} runs ({r['tokens']:,} tokens), {r['ica_jobs']} of {self.ica_jobs} "
                         f"ICA jobs, {r['layers']} of {len(w)} layers' elimination; figures below are per rank, "
                         "the networks folder must be one that every rank sees")
        if self.runs:
            lines.append(f"  decomposition  {self.runs} runs x {self.components} components: {self.ica_jobs} ICA jobs "
                         f"(layer x run), {self.engine} engine on {self.ica_device}, {self.workers} at a time")
        else:
            lines.append("  decomposition  none (the method needs no ICA maps)")
        lines += [
            f"  disk           capture {gb(self.disk['capture'])} ({self.rank_share.get('tokens', self.tokens):,} tokens x "
            f"{sum(w):,} channels x 2 bytes = "
            f"{self.disk['capture']:,} bytes) + Gram matrices {gb(self.disk['gram'])} + maps {gb(self.disk['maps'])} "
            f"= {gb(total_disk)} in {self.networks_dir} ({gb(self.free)} free"
            + ("; NOT ENOUGH)" if total_disk > self.free else ")"),
            f"  RAM            ~{gb(self.ram['peak'])} peak: runtime {gb(self.ram['runtime'])} + weights in host memory "
            f"{gb(self.ram['weights'])} + the largest step: capture batch {gb(self.ram['capture'])}, "
            f"Gram {gb(self.ram['gram'])}, ICA {self.workers} x {gb(self.ram['ica_job'])}",
        ]
        if self.gpu:
            lines.append(f"  GPU memory     ~{gb(self.gpu['weights'] + self.gpu['capture'])}: "
                         f"weights {gb(self.gpu['weights'])} "
                         f"+ capture batch {gb(self.gpu['capture'])} (spread over the GPUs with a device_map)")
        s = self.seconds
        lines.append(f"  time           ~{_duration(sum(s.values()))} (capture {_duration(s['capture'])}, "
                     f"Gram {_duration(s['gram'])}, "
                     f"ICA {_duration(s['ica'])}, selection {_duration(s['selection'])}; rough rates, within ~2x)")
        if self.out:
            lines.append(f"  checkpoint     {self.out} (at most {gb(self.params * DTYPE_BYTES[self.dtype])})")
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def make(recipe: Recipe, networks_dir: str | Path | None = None, ranks: int = 1) -> Plan:
    """The plan of ``fbn-prune networks`` (``networks_dir`` given) or ``prune`` (networks in a temporary
    folder unless ``networks_dir``), for one process or ``ranks`` torch.distributed processes on one machine
    (each with a model replica; the figures of the busiest rank). Raises UserError for what a real run would
    refuse early (unknown model, bad calibration, a RAM budget too small)."""
    if ranks < 1:
        raise UserError(f"--ranks must be at least 1, got {ranks}.")
    method = check_selection(recipe.selection)
    if not recipe.model:
        raise UserError("name a model: fbn-prune prune MODEL, or `model:` in the recipe.")
    source = resolve(recipe.model)
    try:
        config = AutoConfig.from_pretrained(source.path)
        tok = AutoTokenizer.from_pretrained(source.path)
    except (OSError, ValueError) as e:
        raise UserError(f"could not read model {source.spec!r}: {str(e).strip().splitlines()[0]}") from e
    adapter = adapter_for(config)
    layout = layout_for(recipe.export.layout)
    layout.check_model_type(config.model_type)  # what prune refuses before the weights load
    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(config)
    empty.tie_weights()  # not done on meta tensors by from_config; counts a tied LM head once
    widths = adapter.channel_widths(empty)
    layout.check_original_widths(widths)  # what prune refuses before the capture
    shape = model_shape(config, widths, empty.num_parameters(), recipe.dtype)
    del empty
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token

    c, d = recipe.calibration, recipe.decomposition
    generated = not c.task and (not c.source or c.source == GENERATED)
    if generated:
        documents, tokens, source_text = c.samples, c.samples * c.seq_len, GENERATED
    else:
        cal = calib.load(recipe, None, tok)
        if method.needs.maps:
            calib.check_run_tokens(cal, d.components)
        documents, tokens, source_text = sum(len(r) for r in cal.runs), cal.n_tokens, cal.source

    device = compute_device(recipe)
    host_model = device == "cpu"
    resident = res.RUNTIME_BYTES + (shape.weight_bytes if host_model else 0)
    per_token = res.capture_bytes_per_token(shape, c.seq_len, host_model)
    max_ram = parse_size(c.max_ram) if c.max_ram else None
    batch = res.batch_under_budget(max_ram, resident, per_token, c.seq_len, c.batch_size) if max_ram else c.batch_size

    needs_maps = method.needs.maps
    runs = d.runs if needs_maps else 0
    ica_device = resolve_ica_device(d.device)
    run_tokens = -(-tokens // max(d.runs, 1))
    share = _rank_share(ranks, d.runs, runs, run_tokens, tokens, len(widths), method.cached)
    per_job = res.ica_job_bytes(run_tokens, max(widths), d.components) if needs_maps else 0
    jobs = resolve_jobs(d.jobs, ica_device)
    if d.jobs == "auto" and ica_device == "cpu":
        jobs = max(1, jobs // ranks)  # the ranks share the machine's cores
    workers = res.jobs_under_budget(jobs, max_ram, resident, per_job + res.RUNTIME_BYTES)
    workers = max(1, min(workers, max(share["ica_jobs"], 1)))
    engine = d.engine if d.engine != "auto" else ("torch" if ica_device.startswith("cuda") else "sklearn")

    folder = Path(networks_dir) if networks_dir else netcache.root()  # prune's networks cache
    disk = {"capture": res.capture_disk(widths, share["tokens"]), "gram": res.gram_disk(widths),
            "maps": res.maps_disk(widths, runs, d.components)}
    ica_host = per_job * workers if ica_device == "cpu" else 2 * run_tokens * max(widths) * workers
    partials = share["runs"] * max(widths) ** 2 * 8 if ranks > 1 else 0  # a rank's run sums, held for the chain
    ram = {"runtime": res.RUNTIME_BYTES, "weights": resident - res.RUNTIME_BYTES, "capture": batch * c.seq_len * per_token,
           "gram": res.gram_bytes(max(widths)) + partials, "ica_job": per_job}
    ram["peak"] = resident + max(ram["capture"], ram["gram"], ica_host)
    gpu = {}
    if not host_model:
        gpu = {"weights": shape.weight_bytes, "capture": batch * c.seq_len * res.forward_bytes_per_token(shape, c.seq_len)}
    selection = res.selection_seconds(widths, shape.hidden, ica_device, method.needs.gram,
                                      recipe.selection.compensate == "lstsq", recipe.selection.ratio or 0.2)
    seconds = {"capture": res.capture_seconds(shape, share["tokens"], device),
               "gram": res.gram_seconds(widths, share["tokens"], ica_device),
               "ica": (res.ica_seconds(widths, tokens, runs, d.components, ica_device, workers)
                       * share["ica_jobs"] / max(len(widths) * runs, 1)) if runs else 0.0,
               "selection": selection * share["layers"] / len(widths)}
    placement = f"device_map={recipe.device_map}" if recipe.device_map else f"on {device}"
    return Plan(model=source.spec, model_type=config.model_type, params=shape.params, dtype=recipe.dtype,
                placement=placement, widths=widths, calibration=source_text, documents=documents, tokens=tokens,
                tokens_exact=not generated, seq_len=c.seq_len, batch_size=batch, runs=runs, components=d.components,
                ica_jobs=len(widths) * runs, workers=workers, ica_device=ica_device, engine=engine,
                networks_dir=str(folder), out=recipe.out, disk=disk, free=res.free_disk(folder), ram=ram, gpu=gpu,
                seconds=seconds, ranks=ranks, rank_share=share)


def _rank_share(ranks: int, all_runs: int, runs: int, run_tokens: int, tokens: int, layers: int,
                shared_scores: bool) -> dict[str, int]:
    """The busiest rank's share of the work (see _runtime/world.py): a contiguous block of the calibration
    runs to capture, jobs j with j % ranks == rank of the layer x run ICA jobs, and the layers' eliminations
    when the method's scores are shared (World.mine); rank 0 also selects and exports."""
    block = -(-all_runs // ranks)
    return {"all_runs": all_runs, "runs": block, "tokens": min(tokens, block * run_tokens),
            "ica_jobs": -(-(layers * runs) // ranks), "layers": -(-layers // ranks) if shared_scores else layers}
