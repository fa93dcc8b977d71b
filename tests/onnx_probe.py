"""Run by another Python (a transformers 4.x + optimum-onnx virtualenv), not collected by pytest.

Usage: python onnx_probe.py JOBS.json  -> one JSON object on stdout.
JOBS.json: {"ids": [...], "work": DIR, "folders": [path, ...]}. Each folder is exported with
optimum's ``main_export`` (task text-generation, float32) and run with ONNX Runtime's
ORTModelForCausalLM (the exact and deci layouts, whose config.json names ``fbn_base_model_type``, with
trust_remote_code and the base architecture's ONNX config as ``custom_onnx_configs``); the result per
folder is the logits of ``ids`` (shape (len(ids), vocab)), or the export error's first line. Imports nothing from fbn_prune.
"""

import json
import sys
from pathlib import Path

import torch
from optimum.exporters.onnx import main_export
from optimum.exporters.tasks import TasksManager
from optimum.onnxruntime import ORTModelForCausalLM
from transformers import AutoConfig


def probe(folder: str, out: Path, ids: list[int]) -> dict:
    config = json.loads((Path(folder) / "config.json").read_text())
    extra = {}
    base = config.get("fbn_base_model_type")
    if base:  # exact and deci layouts: remote code, exported with the base architecture's ONNX config
        constructor = TasksManager.get_exporter_config_constructor(
            exporter="onnx", model_type=base, task="text-generation", library_name="transformers")
        cfg = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        extra = {"trust_remote_code": True, "custom_onnx_configs": {"model": constructor(cfg)}}
    try:
        main_export(folder, output=out, task="text-generation", device="cpu", dtype="fp32", **extra)
        model = ORTModelForCausalLM.from_pretrained(out, use_cache=False, **({"trust_remote_code": True} if base else {}))
    except Exception as e:  # noqa: BLE001 -- report, do not crash: some layouts are expected to be refused
        return {"error": f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]}"}
    x = torch.tensor([ids])
    logits = model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0]
    return {"logits": logits.tolist()}


def main() -> None:
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    work = Path(jobs["work"])
    results = {f: probe(f, work / str(i), jobs["ids"]) for i, f in enumerate(jobs["folders"])}
    print(json.dumps({"results": results}))


if __name__ == "__main__":
    main()
