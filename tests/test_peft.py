"""PEFT LoRA on every layout (deci: llama): attach (FFN + attention), merge, save, reload give the same logits."""

from __future__ import annotations

import pytest
import torch
from test_compat import DECI_FFN, IDS, LAYOUT_ARCHS, make_source, write_pruned
from transformers import AutoModelForCausalLM

from fbn_prune.config.layouts import LAYOUT_NAMES, layout_for

peft = pytest.importorskip("peft")


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0]


TARGETS = {"llama": ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"], "gpt2": ["c_attn", "c_fc", "c_proj"]}
CASES = [(arch, layout) for layout in LAYOUT_NAMES for arch in TARGETS if arch in LAYOUT_ARCHS.get(layout, [arch])]
"""(arch, layout): llama and gpt2 on every layout that writes them (deci: llama only)."""


@pytest.mark.parametrize("arch,layout", CASES)
def test_lora_attach_merge_save_reload(arch, layout, tmp_path):
    targets = TARGETS[arch]
    trust = layout_for(layout).remote_code
    source = make_source(arch, tmp_path / "src", **({"intermediate_size": DECI_FFN} if layout == "deci" else {}))
    folder = write_pruned(source, layout, tmp_path / "ck")
    load = {"dtype": torch.float32, "trust_remote_code": trust}
    base = AutoModelForCausalLM.from_pretrained(folder, **load).eval()
    plain = _logits(base)
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False,
                          fan_in_fan_out=arch == "gpt2")
    model = peft.get_peft_model(base, cfg).eval()
    adapted = _logits(model)
    assert (adapted - plain).abs().max() > 1e-3  # the adapter is live on the pruned (per-layer width) modules
    model.save_pretrained(tmp_path / "adapter")
    merged = model.merge_and_unload()
    assert (_logits(merged) - adapted).abs().max() < 1e-4
    merged.save_pretrained(tmp_path / "merged")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", **load).eval()
    if layout == "deci":  # the merged model is still the shipped DeciLM class, at the per-layer widths
        assert type(again).__name__ == "DeciLMForCausalLM"
    again_logits = _logits(again)
    d_merged = (again_logits - adapted).abs().max().item()
    top1 = (again_logits.argmax(-1) == adapted.argmax(-1)).float().mean().item()
    assert d_merged < 1e-4
    fresh = AutoModelForCausalLM.from_pretrained(folder, **load).eval()
    reloaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    d_adapter = (_logits(reloaded) - adapted).abs().max().item()
    print(f"{arch} {layout}: merged+saved+reloaded {d_merged:.2g} / top-1 {top1:.0%}, adapter reloaded {d_adapter:.2g}")
    assert d_adapter < 1e-5
