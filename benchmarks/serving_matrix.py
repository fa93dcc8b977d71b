"""Measure how a written checkpoint agrees across loaders (the figures of docs/serving.md).

    python benchmarks/serving_matrix.py CHECKPOINT [CHECKPOINT ...] [--onnx] [--peft]

Reference: transformers 5.x (installed) float32 logits of a fixed English text tokenized by the
checkpoint's own tokenizer. Compared against (max abs logit diff, top-1 agreement):
- transformers 4.57 in the pinned virtualenv of tests/test_compat.py (tests/tf4_probe.py), which
  also checks the tokenizer's ids and, for the exact layout, vLLM's AutoModel.from_config route;
- with --onnx, optimum's ONNX export run in ONNX Runtime (tests/onnx_probe.py);
- with --peft, a random LoRA on the FFN and attention projections: merged vs unmerged logits, and
  the merged model saved and reloaded.
Prints one Markdown table. CPU only; SmolLM2-135M takes a few minutes with --onnx.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from test_compat import ONNX_PINS, ONNX_PROBE, PROBE, TF4_PINS, run_probe  # noqa: E402 (tests/ on the path first)

TEXT = ("The capital of France is Paris. It lies on the Seine, and its museums, cafes and bridges draw "
        "millions of visitors every year, who come for the art, the food and the long walks along the river.")


def compare(a: torch.Tensor, b: torch.Tensor) -> str:
    """'max abs diff / top-1 agreement' of two (tokens, vocab) logit tensors."""
    return f"{(a - b).abs().max().item():.2e} / {(a.argmax(-1) == b.argmax(-1)).float().mean().item():.0%}"


def peft_figures(folder: Path, trust: bool, ids: list[int], ref: torch.Tensor) -> str:
    import peft

    load = {"dtype": torch.float32, "trust_remote_code": trust}
    model = AutoModelForCausalLM.from_pretrained(folder, **load).eval()
    linear = sorted({n.split(".")[-1] for n, m in model.named_modules() if type(m).__name__ in ("Linear", "Conv1D")}
                    - {"lm_head", "embed_out"})
    cfg = peft.LoraConfig(r=8, target_modules=linear, init_lora_weights=False,
                          fan_in_fan_out=model.config.model_type.endswith("gpt2"))
    lora = peft.get_peft_model(model, cfg).eval()
    x = torch.tensor([ids])
    with torch.no_grad():
        live = lora(x).logits[0]
        merged = lora.merge_and_unload()
        after = merged(x).logits[0]
        with tempfile.TemporaryDirectory() as tmp:
            merged.save_pretrained(tmp)
            again = AutoModelForCausalLM.from_pretrained(tmp, **load).eval()(x).logits[0]
    return f"merge {compare(after, live)}; reload {compare(again, live)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--onnx", action="store_true")
    ap.add_argument("--peft", action="store_true")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for folder in args.checkpoints:
            folder = folder.resolve()
            info = json.loads((folder / "fbn_prune.json").read_text())
            trust = info["layout"] == "exact"
            tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
            ids = tok(TEXT)["input_ids"]
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, trust_remote_code=trust).eval()
            with torch.no_grad():
                ref = model(torch.tensor([ids])).logits[0]
            tf4 = run_probe("tf4-venv", TF4_PINS, PROBE, {"ids": ids, "text": TEXT,
                            "folders": [{"path": str(folder), "trust": trust}]}, work)["results"][str(folder)]
            row = {"checkpoint": f"{folder.name} ({info['layout']})", "tokens": str(len(ids)),
                   "transformers 4.57": compare(torch.tensor(tf4["logits"]), ref)
                   + ("" if tf4["encoded"] == ids else " (tokenizer differs!)"),
                   "AutoModel route": (f"{tf4['automodel_class']}, hidden diff {tf4['automodel_diff']:.1e}"
                                       if trust else "stock class")}
            if args.onnx:
                got = run_probe("onnx-venv", ONNX_PINS, ONNX_PROBE, {"ids": ids, "work": str(work / folder.name),
                                "folders": [str(folder)]}, work)["results"][str(folder)]
                row["ONNX (optimum, ORT)"] = got.get("error") or compare(torch.tensor(got["logits"]), ref)
            if args.peft:
                row["PEFT LoRA"] = peft_figures(folder, trust, ids, ref)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(r.get(c, "") for c in cols) + " |")


if __name__ == "__main__":
    main()
