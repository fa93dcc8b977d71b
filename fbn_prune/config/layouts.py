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
        architecture: the causal LM class in the shipped ``modeling_fbn.py`` (config.json's
            ``architectures``); None for a stock config.
        width_step: every stored FFN width is a multiple of this (so are ``selection.round_to`` and
            ``selection.min_width``).
        model_types: the base ``model_type``s the layout can write; empty: every supported architecture.
        serving: the model card's and ``inspect``'s line on serving with vLLM (``{repo}``: repository id).
    """

    name: str
    per_layer: bool
    zero_padded: bool
    remote_code: bool
    help: str
    card_text: str
    loading: str = _STOCK_LOADING
    architecture: str | None = None
    width_step: int = 1
    model_types: tuple[str, ...] = ()
    serving: str = "vllm serve {repo}"

    def check_rounding(self, round_to: int, min_width: int) -> None:
        """UserError unless the selection's ``round_to`` and ``min_width`` keep widths multiples of ``width_step``."""
        if round_to % self.width_step or min_width % self.width_step:
            raise UserError(f"--layout {self.name} stores every FFN width as a multiple of {self.width_step}: give "
                            f"--round-to and --min-width as multiples of it (e.g. {self.width_step}), got "
                            f"{round_to} and {min_width}.")

    def check_model_type(self, model_type: str) -> None:
        """UserError (one line) unless the layout can write a model of ``model_type`` (config.json's ``model_type``).

        Cheap (config only): runs before the weights load, so an unsupported model fails before any capture."""
        if self.model_types and model_type not in self.model_types:
            raise UserError(f"--layout {self.name} writes {' or '.join(self.model_types)} models only (what vLLM's "
                            f"{self.architecture} serves); this model is {model_type!r}: use --layout exact.")

    def check_original_widths(self, widths: list[int]) -> None:
        """UserError (one line) unless every original FFN width (one per layer) is a multiple of ``width_step``.

        Unpruned layers, and pruned ones that keep every channel, store their original width; with ``round_to``
        and ``min_width`` multiples of ``width_step`` (check_rounding) every other stored width is one. Runs once
        the model's widths are known, before any capture."""
        bad = sorted({w for w in widths if w % self.width_step})
        if bad:
            raise UserError(f"--layout {self.name} stores every FFN width as a multiple of {self.width_step}; this "
                            f"model's FFN width{'s' * (len(bad) > 1)} {', '.join(map(str, bad))} "
                            f"{'are' if len(bad) > 1 else 'is'} not (unpruned layers keep it): use --layout exact.")


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
_REMOTE_LOADING = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                   "# per-layer FFN widths: the checkpoint ships modeling_fbn.py\n"
                   'model = AutoModelForCausalLM.from_pretrained("{repo}", trust_remote_code=True)\n'
                   "# transformers 5 reads config.json for the tokenizer too: without the flag it asks before running "
                   "the code\n"
                   'tokenizer = AutoTokenizer.from_pretrained("{repo}", trust_remote_code=True)')
EXACT = Layout(
    "exact", per_layer=True, zero_padded=False, remote_code=True,
    help="per-layer widths, loaded with `trust_remote_code=True`",
    card_text="each layer keeps exactly its own channels; config.json lists the widths and the checkpoint ships "
              "`modeling_fbn.py` (needs `trust_remote_code=True`).",
    loading=_REMOTE_LOADING, architecture="FbnForCausalLM",
    serving="vllm serve {repo} --trust-remote-code --model-impl transformers  # vLLM's Transformers backend")
DECI = Layout(
    "deci", per_layer=True, zero_padded=False, remote_code=True,
    help="per-layer widths (multiples of 256) as DeciLM / Nemotron-NAS, served natively by vLLM; Llama only",
    card_text="each layer keeps exactly its own channels, stored as a DeciLM / Nemotron-NAS checkpoint "
              "(`DeciLMForCausalLM`, per-layer `block_configs`) that vLLM serves natively; transformers loads it "
              "through the shipped `modeling_fbn.py` (needs `trust_remote_code=True`).",
    loading=_REMOTE_LOADING, architecture="DeciLMForCausalLM", width_step=256, model_types=("llama",),
    serving="vllm serve {repo} --trust-remote-code  # vLLM's native DeciLMForCausalLM")

LAYOUTS: dict[str, Layout] = {layout.name: layout for layout in (UNIFORM, PADDED, EXACT, DECI)}
"""Every layout by name, in the order help and docs list them (the first is the default)."""

LAYOUT_NAMES: tuple[str, ...] = tuple(LAYOUTS)


def layout_for(name: str, where: str = "export.layout") -> Layout:
    """The layout called ``name``; UserError naming the known ones otherwise."""
    if name not in LAYOUTS:
        raise UserError(f"{where} must be one of {', '.join(LAYOUTS)}, got {name!r}.")
    return LAYOUTS[name]
