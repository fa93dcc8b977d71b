"""The model card (README.md) of a pruned checkpoint, rendered from its provenance without Hub calls.

The model card (README.md) of a pruned checkpoint: Hub YAML metadata, then how it was made, how to
load it for its layout, and (after `fbn-prune eval`) the evaluation table.

Metadata (the YAML front matter the Hub reads): ``base_model`` (the base model's Hub id, when known),
``license`` (the base model's), ``library_name``, ``pipeline_tag``, ``tags`` (``pruned``,
``fbn-prune``, ...) and, once evaluated, ``model-index`` with the pruned model's lm-eval results,
built through huggingface_hub's own :class:`ModelCardData` (``eval_results`` + ``model_name``) so the
key is spelled and shaped the way the Hub parses it.

:func:`validate_card` checks a card's metadata locally, without the network, the way ``fbn-prune push``
does before any upload. Nothing here asks the Hub: callers pass the licence in
(:func:`fbn_prune.ship.hub.card_license` finds the base model's).
"""

from __future__ import annotations

import re

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results

from fbn_prune.config.layouts import layout_for
from fbn_prune.export.padding import padding_note
from fbn_prune.export.provenance import Provenance

# what the load snippet names until the checkpoint is pushed (`fbn-prune push` puts the repo id there)
PLACEHOLDER_REPO = "path/to/this/folder"
TAGS = ["pruned", "fbn-prune", "structured-pruning"]
PIPELINE_TAG = "text-generation"

# Licence identifiers the Hub knows (https://huggingface.co/docs/hub/repositories-licenses); a card with
# another value is pushed with a warning, since the Hub then shows it as unknown.
HUB_LICENSES = {
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1",
    "lgpl-3.0", "isc", "h-research", "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0",
    "odc-by", "odbl", "openmdw-1.0", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib",
    "pddl", "lgpl-lr", "deepfloyd-if-license", "fair-noncommercial-research-license", "llama2", "llama3",
    "llama3.1", "llama3.2", "llama3.3", "llama4", "grok2-community", "gemma", "other", "unknown",
}
PIPELINE_TAGS = {"text-generation", "text2text-generation", "fill-mask", "feature-extraction", "image-text-to-text"}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


# ----------------------------------------------------------------------------- rendering
def card_data(info: Provenance, license: str | None = None, model_index: list | None = None) -> ModelCardData:
    """The Hub metadata of a checkpoint described by ``info`` (its fbn_prune.json); ``license`` as given
    (:func:`fbn_prune.ship.hub.card_license` finds the base model's).

    ``model_index`` is the Hub ``model-index`` list (one entry naming the model, with its results),
    as :func:`fbn_prune.evaluate.render.model_index` builds it."""
    hub_id = info.base_model_hub_id
    eval_results, model_name = None, None
    if model_index:
        model_name, eval_results = model_index_to_eval_results(model_index)
    return ModelCardData(
        base_model=hub_id if hub_id and HUB_ID.match(hub_id) else None,
        license=license,
        library_name="transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=[*TAGS, f"layout-{info.layout}"],
        eval_results=eval_results,
        model_name=model_name,
    )


def render_card(info: Provenance, repo: str = PLACEHOLDER_REPO, license: str | None = None,
                eval_table: str | None = None, model_index: list | None = None) -> str:
    """Card text from the checkpoint's provenance (fbn_prune.json); KeyError naming the first entry it lacks."""
    info.require("layout", "params", "widths", "original_widths", "stored_widths", "selection", "calibration")
    data = card_data(info, license, model_index)
    p = info.params
    widths = info.widths
    rows = "\n".join(f"| {i} | {info.original_widths[i]} | {w} | {info.stored_widths[i]} |" for i, w in enumerate(widths))
    sel = info.selection
    cal = info.calibration
    budget = (f"ratio {sel['ratio']:.3f} of {'FFN channels' if sel.get('ratio_of', 'ffn') == 'ffn' else 'all parameters'} "
              f"requested, {sel['achieved_ratio']:.3f} of FFN channels removed"
              if sel.get("ratio") is not None
              else f"|z| threshold {sel['threshold']}, {sel['achieved_ratio']:.3f} of FFN channels removed")
    compensate = sel.get("compensate") or "none"
    compensation = ("least-squares prediction of the removed channels from the kept ones, folded into the down projection"
                    if compensate == "lstsq" else "none (plain deletion)")
    per_doc = f", {cal['seq_len']} tokens each" if cal.get("seq_len") else ""
    cal_license = (f"; text {cal['attribution']}, {cal['license']}" if cal.get("attribution") and cal.get("license")
                   else f"; text licensed {cal['license']}" if cal.get("license") else "")
    note = padding_note(info.layout, widths, info.stored_widths, info.original_widths)
    warning = f"\n> **Warning:** {note}\n" if note else ""
    info.require("base_model", "decomposition", "seed", "verification", "fbn_prune_version")
    body = f"""
# {info.base_model.rstrip('/').split('/')[-1]} pruned with fbn_prune

This model is {_link(info)} with
{1 - p['after'] / p['before']:.1%} of its parameters removed ({p['before']:,} -> {p['after']:,}) by
**functional-network pruning** of its feed-forward layers: fbn_prune records each FFN neuron's
activity on calibration text, finds functional networks with ICA (as in fMRI), removes the neurons
whose signal the rest of their network can carry (folding that signal into the kept neurons'
weights) and physically deletes them. No fine-tuning was applied.

## How it was made

| | |
|---|---|
| method | `{sel['method']}` |
| budget | {budget} |
| protected layers | first {sel['protect_first']}, last {sel['protect_last']} |
| calibration | {cal['source']} ({cal['documents']} documents{per_doc}, {cal['tokens']:,} tokens, sha256 `{cal['sha256'][:16]}`){cal_license} |
| decomposition | {info.decomposition} |
| compensation | {compensation} |
| layout | `{info.layout}`: {layout_for(info.layout).card_text} |
| seed | {info.seed} |
| verification | logits of this checkpoint vs the masked original: max relative difference {info.verification['relative_diff']:.2e} on {info.verification['tokens']} held-out tokens |
| fbn_prune | {info.fbn_prune_version} |

The recipe as used is in `recipe.yaml` (rerun it with `fbn-prune prune --recipe recipe.yaml`); full
provenance (versions, timings, the kept-neuron map) is in `fbn_prune.json`.
{warning}
## How to load

```python
{layout_for(info.layout).loading.format(repo=repo)}
```

Serve it with vLLM:

```bash
{layout_for(info.layout).serving.format(repo=repo)}
```
{gguf_section(info.gguf)}
## Per-layer FFN widths

| layer | original | kept | stored |
|---|---|---|---|
{rows}
"""
    if eval_table:
        body += f"\n## Evaluation\n\n{eval_table}\n"
    return ModelCard.from_template(data, template_str="---\n{{ card_data }}\n---\n" + body).content


def gguf_section(gguf: dict | None) -> str:
    """How to run the GGUF written with the checkpoint (``fbn-prune prune --to-gguf``); empty without one."""
    if not gguf:
        return ""
    return f"""
### GGUF (llama.cpp, llama-cpp-python, ollama)

`{gguf['file']}`: llama.cpp architecture `{gguf['architecture']}`, weights `{gguf['dtype']}`.

```bash
llama-cli -m {gguf['file']} -p "The capital of France is"
```

```python
from llama_cpp import Llama

llm = Llama(model_path="{gguf['file']}")
```
"""


def for_repo(text: str, repo_id: str) -> str:
    """The card with its load snippet and serve command naming the Hub repository instead of the local placeholder."""
    text = text.replace(f'from_pretrained("{PLACEHOLDER_REPO}"', f'from_pretrained("{repo_id}"')
    return text.replace(f"vllm serve {PLACEHOLDER_REPO}", f"vllm serve {repo_id}")


def with_license(text: str, license: str) -> str:
    """The card with ``license`` set in its metadata (the rest of the text unchanged)."""
    card = ModelCard(text, ignore_metadata_errors=True)
    card.data.license = license
    return str(card)


def _link(info: Provenance) -> str:
    hub = info.base_model_hub_id
    return f"[{hub}](https://huggingface.co/{hub})" if hub else f"`{info.base_model}`"


# ----------------------------------------------------------------------------- local validation
def validate_card(text: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) about a model card's Hub metadata, checked locally (no network).

    Errors are what the Hub would reject or misread: no or unparsable YAML front matter, a
    ``model-index`` that huggingface_hub cannot parse into eval results (or a metric without a
    numeric value), a ``base_model`` that is not a Hub id, tags that are not strings. Warnings: no
    licence, a licence the Hub does not know, an unusual pipeline tag, a leftover local load path.
    """
    errors: list[str] = []
    warnings: list[str] = []
    if not text.startswith("---"):
        return ["the card has no YAML metadata block (front matter)"], warnings
    try:
        card = ModelCard(text, ignore_metadata_errors=False)
    except Exception as e:  # YAML syntax, model-index shape, ...
        return [f"the card's metadata does not parse: {str(e).splitlines()[0] if str(e) else type(e).__name__}"], warnings
    meta = card.data.to_dict()
    if "model_index" in meta:
        errors.append("metadata key 'model_index' (the Hub reads 'model-index')")
    if meta.get("model-index") is not None:
        try:
            _, results = model_index_to_eval_results(meta["model-index"])
        except Exception as e:
            errors.append(f"model-index does not parse: {type(e).__name__}: {e}")
        else:
            for r in results:
                if not isinstance(r.metric_value, (int, float)) or isinstance(r.metric_value, bool):
                    errors.append(f"model-index: {r.dataset_name} {r.metric_type} has no numeric value")
                if not (r.task_type and r.dataset_type and r.dataset_name and r.metric_type):
                    errors.append(f"model-index: a result lacks task type, dataset type/name or metric type ({r})")
    base = meta.get("base_model")
    for b in ([base] if isinstance(base, str) else base or []):
        if not isinstance(b, str) or not HUB_ID.match(b):
            errors.append(f"base_model {b!r} is not a Hub model id (owner/name)")
    tags = meta.get("tags")
    if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        errors.append("tags must be a list of strings")
    lic = meta.get("license")
    if not lic:
        warnings.append("no license in the card's metadata (the base model's licence could not be found)")
    elif not isinstance(lic, str) or lic not in HUB_LICENSES:
        warnings.append(f"license {lic!r} is not one of the Hub's licence identifiers")
    elif lic == "other" and not meta.get("license_name"):
        warnings.append("license 'other' without license_name")
    tag = meta.get("pipeline_tag")
    if tag is not None and tag not in PIPELINE_TAGS:
        warnings.append(f"pipeline_tag {tag!r} is unusual for a causal language model")
    if f'from_pretrained("{PLACEHOLDER_REPO}"' in card.text or f"vllm serve {PLACEHOLDER_REPO}" in card.text:
        warnings.append(f"the load snippet or serve command still names {PLACEHOLDER_REPO!r}")
    return errors, warnings
