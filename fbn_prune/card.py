"""The model card (README.md) of a pruned checkpoint: Hub YAML metadata, then how it was made and how to load it."""

from __future__ import annotations

from huggingface_hub import ModelCard, ModelCardData

LOADING = {
    "uniform": "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
    'model = AutoModelForCausalLM.from_pretrained("{repo}")\n'
    'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
    "padded": "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
    'model = AutoModelForCausalLM.from_pretrained("{repo}")\n'
    'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
    "exact": "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
    "# per-layer FFN widths: the checkpoint ships modeling_fbn.py\n"
    'model = AutoModelForCausalLM.from_pretrained("{repo}", trust_remote_code=True)\n'
    'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
}

LAYOUT_TEXT = {
    "uniform": "every layer keeps the same number of FFN channels; stock config, loads anywhere (transformers, vLLM, llama.cpp conversion).",
    "padded": "each layer keeps its own channels, zero-padded to the widest layer; stock config, loads anywhere; the zero channels cost memory but change no output.",
    "exact": "each layer keeps exactly its own channels; config.json lists the widths and the checkpoint ships `modeling_fbn.py` (needs `trust_remote_code=True`).",
}


def render(info: dict, repo: str = "path/to/this/folder", license: str | None = None, eval_table: str | None = None,
           model_index: list | None = None) -> str:
    """Card text from the provenance dict written to fbn_prune.json."""
    p = info["params"]
    data = ModelCardData(
        base_model=info.get("base_model_hub_id"),
        license=license or info.get("license"),
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["pruned", "fbn-prune", "structured-pruning", f"layout-{info['layout']}"],
    )
    if model_index:
        data.model_index = model_index  # type: ignore[attr-defined]
    widths = info["widths"]
    rows = "\n".join(f"| {i} | {info['original_widths'][i]} | {w} | {info['stored_widths'][i]} |" for i, w in enumerate(widths))
    sel = info["selection"]
    cal = info["calibration"]
    budget = (f"ratio {sel['ratio']:.3f} of FFN channels requested, {sel['achieved_ratio']:.3f} removed"
              if sel.get("ratio") is not None else f"|z| threshold {sel['threshold']}, {sel['achieved_ratio']:.3f} of FFN channels removed")
    body = f"""
# {info['base_model'].split('/')[-1]} pruned with fbn_prune

This model is {_link(info)} with
{1 - p['after'] / p['before']:.1%} of its parameters removed ({p['before']:,} -> {p['after']:,}) by
**functional-network pruning** of its feed-forward layers: fbn_prune records each FFN neuron's
activity on calibration text, finds functional networks with ICA (as in fMRI), keeps the neurons
that belong to them and physically deletes the rest. No fine-tuning was applied.

## How it was made

| | |
|---|---|
| method | `{sel['method']}` |
| budget | {budget} |
| protected layers | first {sel['protect_first']}, last {sel['protect_last']} |
| calibration | {cal['source']} ({cal['documents']} documents, {cal['tokens']:,} tokens, sha256 `{cal['sha256'][:16]}`) |
| decomposition | {info['decomposition']} |
| layout | `{info['layout']}`: {LAYOUT_TEXT[info['layout']]} |
| seed | {info['seed']} |
| verification | logits of this checkpoint vs the masked original: max relative difference {info['verification']['relative_diff']:.2e} on {info['verification']['tokens']} held-out tokens |
| fbn_prune | {info['fbn_prune_version']} |

The recipe as used is in `recipe.yaml`; full provenance (versions, timings, the kept-neuron map) in `fbn_prune.json`.

## How to load

```python
{LOADING[info['layout']].format(repo=repo)}
```

## Per-layer FFN widths

| layer | original | kept | stored |
|---|---|---|---|
{rows}
"""
    if eval_table:
        body += f"\n## Evaluation\n\n{eval_table}\n"
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body).content


def _link(info: dict) -> str:
    hub = info.get("base_model_hub_id")
    return f"[{hub}](https://huggingface.co/{hub})" if hub else f"`{info['base_model']}`"
