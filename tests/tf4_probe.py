"""Run by another Python (a transformers 4.x virtualenv), not collected by pytest: load checkpoints, print results.

Usage: python tf4_probe.py JOBS.json  -> one JSON object on stdout.
JOBS.json: {"ids": [...], "text": "...", "folders": [{"path": ..., "trust": bool}, ...]}.
For each folder: the float32 logits of ``ids`` (shape (len(ids), vocab)) through
AutoModelForCausalLM, the tokenizer's class and ids of ``text``, the chat template rendered
for one user turn (or null), and with ``trust`` (remote code) the largest difference between
the causal LM's base model and ``AutoModel.from_config(config, trust_remote_code=True)``
loaded with the same weights (the call vLLM's Transformers backend makes).
Imports nothing from fbn_prune.
"""

import json
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer


def probe(path: str, trust: bool, ids: list[int], text: str) -> dict:
    # Gemma 2 in transformers 4.x needs eager attention (its default SDPA drops the soft-capping); 5.x picks eager itself
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust)
    attn = {"attn_implementation": "eager"} if getattr(config, "attn_logit_softcapping", None) is not None else {}
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, trust_remote_code=trust, **attn).eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        logits = model(x).logits[0]
    tok = AutoTokenizer.from_pretrained(path)
    chat = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False) if tok.chat_template else None
    out = {"logits": logits.tolist(), "tokenizer_class": type(tok).__name__, "encoded": tok(text)["input_ids"],
           "chat": chat, "rope_theta": getattr(model.config, "rope_theta", None)}
    if trust:
        base = AutoModel.from_config(config, trust_remote_code=True, torch_dtype=torch.float32, **attn).eval()
        ref = model.get_submodule(model.base_model_prefix)
        base.load_state_dict(ref.state_dict(), strict=True)
        with torch.no_grad():
            out["automodel_class"] = type(base).__name__
            out["automodel_diff"] = (base(x).last_hidden_state - ref(x).last_hidden_state).abs().max().item()
    return out


def main() -> None:
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    results = {f["path"]: probe(f["path"], f["trust"], jobs["ids"], jobs["text"]) for f in jobs["folders"]}
    print(json.dumps({"transformers": transformers.__version__, "results": results}))


if __name__ == "__main__":
    main()
