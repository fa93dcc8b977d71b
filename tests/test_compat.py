"""Checkpoints read the same under every loader: transformers 5.x here, transformers 4.57 in its own
virtualenv (created once under the fbn_prune cache), and the AutoModel route vLLM's Transformers backend takes.

The 4.57 virtualenv: $FBN_PRUNE_TF4_VENV or ~/.cache/fbn_prune/tf4-venv, built with ``python -m venv``
and pinned packages (TF4_PINS); the ONNX one (optimum-onnx + ONNX Runtime on 4.57) likewise as onnx-venv.
Tests that need them skip only when pip finds no package index.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import ARCHS, save_tiny
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

from fbn_prune.config.layouts import layout_for
from fbn_prune.models.arch import adapter_for
from fbn_prune.export.compat import portable_config, portable_tokenizer_config
from fbn_prune.export.checkpoint import write_checkpoint
from fbn_prune.export.provenance import Provenance
from fbn_prune.export.surgery import MODELING_FILE, build_pruned, modeling_source

TF4_PINS = ("torch==2.13.0", "transformers==4.57.6", "tokenizers==0.22.2", "safetensors==0.8.0", "numpy==2.4.6")
PROBE = Path(__file__).with_name("tf4_probe.py")
ONNX_PROBE = Path(__file__).with_name("onnx_probe.py")
IDS = [0, 17, 300, 42, 5, 511, 128, 64, 9, 250, 3, 77]
TEXT = "Anna sees the small dog near the river, and then she smiles."
CHAT = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}<|assistant|>"
LAYOUT_KEEP = {"uniform": [72, 72, 72, 72], "padded": [88, 64, 80, 72], "exact": [96, 48, 80, 64],
               "deci": [768, 256, 512, 256]}
"""Kept channels per layer (of 96; deci: of DECI_FFN); padded stores 88 in every layer, exact and deci store these."""
DECI_FFN = 768
"""The deci layout's tiny llama has this FFN width (widths are multiples of 256 there)."""
LAYOUT_ARCHS = {"deci": ["llama"]}
"""Architectures a layout writes, where not all of ARCHS (deci: Llama only)."""


def _rope_overrides(arch: str) -> dict:
    """A non-default rope base (100000, as SmolLM2 has) so a loader that misses it computes other logits."""
    rope = AutoConfig.for_model(arch).to_dict().get("rope_parameters")
    if not isinstance(rope, dict):
        return {}
    new = {**rope, "rope_theta": 100000.0}
    if "partial_rotary_factor" in rope:
        new["partial_rotary_factor"] = 0.5
    return {"rope_parameters": new}


def make_source(arch: str, folder: Path, **overrides) -> Path:
    """A tiny model folder with a non-default rope base and a chat template (saved by transformers 5)."""
    save_tiny(arch, folder, **_rope_overrides(arch), **overrides)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = CHAT
    tok.save_pretrained(folder)
    return folder


def write_pruned(source: Path, layout: str, out: Path) -> Path:
    """Prune ``source`` with fixed random kept channels and write it through the export path (no ICA)."""
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(source)
    adapter = adapter_for(model.config)
    g = torch.Generator().manual_seed(0)
    kept = [torch.randperm(w, generator=g)[:n].sort().values for w, n in zip(adapter.channel_widths(model), LAYOUT_KEEP[layout])]
    pruned = build_pruned(model, adapter, kept, layout, round_to=8)
    files = {MODELING_FILE: modeling_source(model.config.model_type)} if layout_for(layout).remote_code else {}
    return write_checkpoint(pruned, tok, out, files=files, info=Provenance(layout=layout), max_shard_size="1GB",
                            verify=lambda _: {"ok": True}, card=lambda _: "test card\n")


def logits5(folder: Path, trust: bool) -> torch.Tensor:
    """float32 logits of IDS under the installed transformers 5, shape (len(IDS), vocab)."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, trust_remote_code=trust).eval()
    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("compat_src")
    made: dict[str, Path] = {}

    def get(arch: str, layout: str | None = None) -> Path:
        """The source for ``arch`` (for the deci layout: FFN width DECI_FFN)."""
        key = f"{arch}-{DECI_FFN}" if layout == "deci" else arch
        if key not in made:
            made[key] = make_source(arch, root / key, **({"intermediate_size": DECI_FFN} if layout == "deci" else {}))
        return made[key]

    return get


# ----------------------------------------------------------------------------- written files
def test_config_has_both_spellings_and_no_loader_keys(sources, tmp_path):
    out = write_pruned(sources("llama"), "uniform", tmp_path / "ck")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rope_parameters"]["rope_theta"] == cfg["rope_theta"] == 100000.0
    assert cfg["torch_dtype"] == cfg["dtype"] == "float32"
    assert cfg.get("rope_scaling") is None  # default rope: 4.x wants none
    tcfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tcfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tcfg["chat_template"] == CHAT == (out / "chat_template.jinja").read_text()
    for data in (cfg, tcfg):
        assert not {"is_local", "local_files_only", "_commit_hash"} & set(data)
        assert not str(data.get("_name_or_path", data.get("name_or_path", ""))).startswith("/")


def test_original_tokenizer_files_are_copied(sources, tmp_path):
    src = sources("qwen2")
    out = write_pruned(src, "padded", tmp_path / "ck")
    assert (out / "tokenizer.json").read_bytes() == (src / "tokenizer.json").read_bytes()
    a, b = AutoTokenizer.from_pretrained(src), AutoTokenizer.from_pretrained(out)
    assert a(TEXT)["input_ids"] == b(TEXT)["input_ids"] and a.chat_template == b.chat_template


@pytest.mark.parametrize("rope,expect", [
    ({"rope_type": "default", "rope_theta": 5e5}, {"rope_theta": 5e5}),
    ({"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192},
     {"rope_theta": 5e5, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}),
    ({"full_attention": {"rope_type": "default", "rope_theta": 1e6},
      "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
     {"rope_theta": 1e6, "rope_local_base_freq": 1e4}),
])
def test_portable_config_rope(rope, expect):
    out = portable_config({"model_type": "llama", "rope_parameters": rope, "dtype": "bfloat16"})
    assert {k: out[k] for k in expect} == expect and out["torch_dtype"] == "bfloat16"
    assert out["rope_parameters"] == rope


def test_portable_config_drops_loader_keys_keeps_hub_ids():
    local = portable_config({"_name_or_path": "/root/.cache/fbn_prune/gguf/x-123", "is_local": True, "model_type": "gpt2",
                             "_model_name_or_path": "Smollm2 135M 8k Lc100K Mix1 Ep2"})
    assert not {"_name_or_path", "is_local", "_model_name_or_path"} & set(local)
    assert portable_config({"_name_or_path": "HuggingFaceTB/SmolLM2-135M"})["_name_or_path"] == "HuggingFaceTB/SmolLM2-135M"
    neox = portable_config({"model_type": "gpt_neox", "rope_parameters": {"rope_theta": 1e4, "partial_rotary_factor": 0.5}})
    assert neox["rotary_pct"] == 0.5
    tok = portable_tokenizer_config({"tokenizer_class": "GPT2Tokenizer", "local_files_only": True}, "T")
    assert tok == {"tokenizer_class": "GPT2Tokenizer", "chat_template": "T"}


# ----------------------------------------------------------------------------- the AutoModel route (vLLM)
@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt", "phi3"])
def test_exact_layout_builds_through_automodel_from_config(arch, sources, tmp_path):
    """vLLM's Transformers backend calls AutoModel.from_config(config, trust_remote_code=True) and loads the
    checkpoint's weights into it by name; that base model has every layer at its width and the same output."""
    out = write_pruned(sources(arch), "exact", tmp_path / "ck")
    config = AutoConfig.from_pretrained(out, trust_remote_code=True)
    base = AutoModel.from_config(config, trust_remote_code=True, dtype=torch.float32).eval()
    assert type(base).__name__ == "FbnModel"
    assert type(base).is_backend_compatible()  # vLLM refuses the Transformers backend otherwise
    adapter = adapter_for(config)
    causal = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, trust_remote_code=True).eval()
    assert adapter.channel_widths(causal) == LAYOUT_KEEP["exact"]
    prefix = base.base_model_prefix + "."
    state = {k[len(prefix):]: v for k, v in load_file(out / "model.safetensors").items() if k.startswith(prefix)}
    base.load_state_dict(state, strict=True)  # shapes must match: every layer was built at its width
    x = torch.tensor([IDS])
    with torch.no_grad():
        hidden = base(x).last_hidden_state
        logits = causal.get_output_embeddings()(hidden)
        ref = causal(x).logits
    assert (logits - ref).abs().max().item() < 1e-5


def test_deci_layout_builds_through_automodel_from_config(sources, tmp_path):
    """The deci config reads like vLLM's nemotron_nas.py reads it (attributes of block_configs entries), and the
    AutoModel route (vLLM's Transformers backend) builds every layer at the width vLLM derives from ffn_mult."""
    out = write_pruned(sources("llama", "deci"), "deci", tmp_path / "ck")
    config = AutoConfig.from_pretrained(out, trust_remote_code=True)
    assert type(config).__name__ == "DeciLMConfig" and config.model_type == "nemotron-nas"
    block = config.block_configs[1]
    assert not block.attention.no_op and config.num_attention_heads // block.attention.n_heads_in_group == 2
    assert hasattr(block.ffn, "ffn_mult") and not hasattr(block.ffn, "intermediate_size")  # vLLM's branch
    assert [c.ffn.ffn_mult * config.hidden_size * 2 / 3 for c in config.block_configs] == LAYOUT_KEEP["deci"]
    base = AutoModel.from_config(config, trust_remote_code=True, dtype=torch.float32).eval()
    assert type(base).__name__ == "DeciLMModel" and type(base).is_backend_compatible()
    causal = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, trust_remote_code=True).eval()
    assert adapter_for(causal.config).channel_widths(causal) == LAYOUT_KEEP["deci"]
    prefix = base.base_model_prefix + "."
    state = {k[len(prefix):]: v for k, v in load_file(out / "model.safetensors").items() if k.startswith(prefix)}
    base.load_state_dict(state, strict=True)
    x = torch.tensor([IDS])
    with torch.no_grad():
        diff = (causal.get_output_embeddings()(base(x).last_hidden_state) - causal(x).logits).abs().max().item()
    assert diff < 1e-5


# ----------------------------------------------------------------------------- transformers 4.57
ONNX_PINS = TF4_PINS + ("optimum-onnx==0.1.0", "optimum==2.1.0", "onnx==1.23.2", "onnxruntime==1.32.0")


def pinned_python(name: str, pins: tuple[str, ...]) -> Path:
    """The python of a pinned virtualenv ``<fbn_prune cache>/<name>`` (or $FBN_PRUNE_<NAME>), created on first use.

    Built with ``python -m venv`` and ``pip install PINS`` beside the target, then renamed; a
    marker file holds the pins, so changed pins rebuild it. Skips the test only when pip finds
    no package index (offline machine); any other failure fails it.
    """
    from fbn_prune._runtime.cache import cache_dir

    venv = Path(os.environ.get(f"FBN_PRUNE_{name.upper().replace('-', '_')}") or cache_dir() / name)
    marker = venv / "fbn-pins.txt"
    text = "\n".join(pins)
    if marker.is_file() and marker.read_text() == text:
        return venv / "bin" / "python"
    build = venv.with_name(f"{venv.name}.build-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(build)], check=True)
    r = subprocess.run([str(build / "bin" / "python"), "-m", "pip", "install", "-q", *pins], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        shutil.rmtree(build, ignore_errors=True)
        if "No matching distribution" in r.stderr or "Could not find a version" in r.stderr:
            pytest.skip(f"no package index reachable to build the {name} virtualenv")
        pytest.fail(f"building the {name} virtualenv failed:\n{r.stderr[-2000:]}")
    (build / "fbn-pins.txt").write_text(text)
    shutil.rmtree(venv, ignore_errors=True)
    os.replace(build, venv)
    return venv / "bin" / "python"


def run_probe(venv: str, pins: tuple[str, ...], script: Path, jobs: dict, tmp_path: Path) -> dict:
    """Run ``script jobs.json`` in the pinned virtualenv ``venv``; its last stdout line, parsed."""
    python = pinned_python(venv, pins)
    path = tmp_path / f"{venv}-jobs.json"
    path.write_text(json.dumps(jobs))
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    r = subprocess.run([str(python), str(script), str(path)], capture_output=True, text=True, env=env, timeout=1800,
                       check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_tf4(folders: list[tuple[Path, bool]], tmp_path: Path) -> dict:
    """Probe ``folders`` ((path, trust_remote_code)) in the 4.57 virtualenv; results by path."""
    jobs = {"ids": IDS, "text": TEXT, "folders": [{"path": str(p), "trust": t} for p, t in folders]}
    report = run_probe("tf4-venv", TF4_PINS, PROBE, jobs, tmp_path)
    assert report["transformers"].startswith("4.57")
    return report["results"]


@pytest.mark.parametrize("layout", ["uniform", "padded", "exact", "deci"])
def test_transformers4_reads_the_same_checkpoint(layout, sources, tmp_path):
    """Every architecture (deci: llama), written by transformers 5: transformers 4.57 computes the same logits
    (max abs diff < 1e-4), tokenizes and renders the chat template the same; exact and deci also via AutoModel."""
    trust = layout_for(layout).remote_code
    base_class = {"exact": "FbnModel", "deci": "DeciLMModel"}.get(layout)
    folders = {arch: write_pruned(sources(arch, layout), layout, tmp_path / arch) for arch in LAYOUT_ARCHS.get(layout, ARCHS)}
    results = run_tf4([(p, trust) for p in folders.values()], tmp_path)
    problems = []
    for arch, folder in folders.items():
        got = results[str(folder)]
        diff = (torch.tensor(got["logits"]) - logits5(folder, trust)).abs().max().item()
        if not diff < 1e-4:
            problems.append(f"{arch}: logits differ by {diff:.3g}")
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
        if got["encoded"] != tok(TEXT)["input_ids"]:
            problems.append(f"{arch}: {got['tokenizer_class']} encodes differently")
        if got["chat"] != tok.apply_chat_template([{"role": "user", "content": TEXT}], tokenize=False):
            problems.append(f"{arch}: chat template renders {got['chat']!r}")
        if trust and not (got["automodel_class"] == base_class and got["automodel_diff"] < 1e-5):
            problems.append(f"{arch}: AutoModel {got['automodel_class']} differs by {got['automodel_diff']:.3g}")
    assert not problems, f"transformers 4.57, {layout} layout: " + "; ".join(problems)


# ----------------------------------------------------------------------------- ONNX (optimum, on transformers 4.57)
def test_onnx_export_through_optimum_matches(sources, tmp_path):
    """optimum's ONNX export run in ONNX Runtime: same logits (< 1e-4) and top-1 as transformers 5 on every layout
    (exact and deci: trust_remote_code and the base architecture's ONNX config, see docs/serving.md)."""
    folders = {layout: write_pruned(sources("llama", layout), layout, tmp_path / layout)
               for layout in ("uniform", "padded", "exact", "deci")}
    jobs = {"ids": IDS, "work": str(tmp_path / "onnx"), "folders": [str(f) for f in folders.values()]}
    results = run_probe("onnx-venv", ONNX_PINS, ONNX_PROBE, jobs, tmp_path)["results"]
    for layout, folder in folders.items():
        got = results[str(folder)]
        assert "error" not in got, f"{layout}: {got.get('error')}"
        ref = logits5(folder, layout_for(layout).remote_code)
        onnx = torch.tensor(got["logits"])
        print(f"ONNX {layout}: {(onnx - ref).abs().max().item():.2g}")
        assert (onnx - ref).abs().max().item() < 1e-4, layout
        assert torch.equal(onnx.argmax(-1), ref.argmax(-1)), layout
