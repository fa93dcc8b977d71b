"""PEFT LoRA on every layout: attach (FFN + attention), merge, save, reload give the same logits."""

from __future__ import annotations

import pytest
import torch
from test_compat import IDS, make_source, write_pruned
from transformers import AutoModelForCausalLM

peft = pytest.importorskip("peft")


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0]


@pytest.mark.parametrize("arch,targets", [("llama", ["q_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]),
                                          ("gpt2", ["c_attn", "c_fc", "c_proj"])])
@pytest.mark.parametrize("layout", ["uniform", "padded", "exact"])
def test_lora_attach_merge_save_reload(arch, targets, layout, tmp_path):
    trust = layout == "exact"
    folder = write_pruned(make_source(arch, tmp_path / "src"), layout, tmp_path / "ck")
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
    assert (_logits(again) - adapted).abs().max() < 1e-4
    fresh = AutoModelForCausalLM.from_pretrained(folder, **load).eval()
    reloaded = peft.PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    assert (_logits(reloaded) - adapted).abs().max() < 1e-5
