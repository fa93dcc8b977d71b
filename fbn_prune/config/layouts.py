"""The export layouts: how a pruned checkpoint stores its FFN widths, and what that means for loading.

One record per layout; every other module asks the record (``per_layer``, ``zero_padded``,
``remote_code``, the card's text) instead of comparing layout names. Adding a layout is one record
here plus its writer in fbn_prune/export/surgery.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from fbn_prune.errors import UserError

_STOCK_LOADING = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                  'model = AutoModelForCausalLM.from_pretrained("{repo}")\n'
                  'tokenizer = AutoTokenizer.from_pretrained("{repo}")')


@dataclass(frozen=True)
class Layout:
    """An export layout.

    Attributes:
        name: the recipe's ``export.layout`` value and the ``--layout`` choice.
        per_layer: each layer keeps its own selection (False: one width for every pruned layer).
        zero_padded: layers are stored at the widest kept width, the missing channels as zeros.
        remote_code: per-layer widths in config.json, loaded through the shipped ``modeling_fbn.py``
            (``trust_remote_code=True``); False: a stock config that every loader reads.
        help: one line for ``--help`` and the recipe reference.
        card_text: the model card's description of the layout.
        loading: the model card's Python snippet (``{repo}`` is the repository id).
    """

    name: str
    per_layer: bool
    zero_padded: bool
    remote_code: bool
    help: str
    card_text: str
    loading: str = _STOCK_LOADING


UNIFORM = Layout(
    "uniform", per_layer=False, zero_padded=False, remote_code=False,
    help="the same width in every layer",
    card_text="every layer keeps the same number of FFN channels; stock config, loads anywhere "
              "(transformers, vLLM, llama.cpp conversion).")
PADDED = Layout(
    "padded", per_layer=True, zero_padded=True, remote_code=False,
    help="per-layer selection, zero-padded to the widest layer",
    card_text="each layer keeps its own channels, zero-padded to the widest layer; stock config, loads anywhere; "
              "the zero channels cost memory but change no output.")
EXACT = Layout(
    "exact", per_layer=True, zero_padded=False, remote_code=True,
    help="per-layer widths, loaded with `trust_remote_code=True`",
    card_text="each layer keeps exactly its own channels; config.json lists the widths and the checkpoint ships "
              "`modeling_fbn.py` (needs `trust_remote_code=True`).",
    loading=("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
             "# per-layer FFN widths: the checkpoint ships modeling_fbn.py\n"
             'model = AutoModelForCausalLM.from_pretrained("{repo}", trust_remote_code=True)\n'
             "# transformers 5 reads config.json for the tokenizer too: without the flag it asks before running the code\n"
             'tokenizer = AutoTokenizer.from_pretrained("{repo}", trust_remote_code=True)'))

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (UNIFORM, PADDED, EXACT)}
"""Every layout by name, in the order help and docs list them (the first is the default)."""

LAYOUT_NAMES: tuple[str, ...] = tuple(LAYOUTS)


def layout_for(name: str, where: str = "export.layout") -> Layout:
    """The layout called ``name``; UserError naming the known ones otherwise."""
    if name not in LAYOUTS:
        raise UserError(f"{where} must be one of {', '.join(LAYOUTS)}, got {name!r}.")
    return LAYOUTS[name]
