"""End to end on tiny models: every architecture x layout gives a checkpoint whose logits equal the
masked original's, loaded the way a user loads it."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import ARCHS, sample_texts
from transformers import AutoModelForCausalLM

from fbn_prune import pipeline
from fbn_prune.models.arch import adapter_for
from fbn_prune.errors import UserError, VerificationError
from fbn_prune.decompose.networks import Networks
from fbn_prune.config.recipe import Recipe
from fbn_prune.export.verify import logits, masked
from fbn_prune.select.compensate import compensate as compensate_layers


def small_recipe(model, out, calib, layout="uniform", **selection) -> Recipe:
    return Recipe.from_dict({
        "export": {"layout": layout},
        "model": str(model), "out": str(out), "device": "cpu",
        "calibration": {"source": str(calib), "samples": 24, "seq_len": 64, "batch_size": 8, "holdout": 2},
        "decomposition": {"runs": 2, "components": 8, "max_iter": 100},
        "selection": {"ratio": 0.25, "round_to": 8, "min_width": 8, **selection},
    })


def test_every_layout_reproduces_masked_original(arch, tiny_dir, calib_txt, tmp_path):
    folder = tiny_dir(arch)
    recipe = small_recipe(folder, tmp_path / "x", calib_txt)
    bundle = pipeline._load(recipe)
    art = pipeline.networks(recipe, tmp_path / "net", model_bundle=bundle, progress=False)
    source, model, tok = bundle
    adapter = adapter_for(model.config)
    ids = [tok("the quick brown fox jumps over the lazy dog and runs away")["input_ids"]]
    for layout, compensate in (("uniform", "none"), ("uniform", "lstsq"), ("padded", "lstsq"), ("exact", "lstsq")):
        protect = {"protect_first": 1} if layout != "uniform" else {}
        r = small_recipe(folder, tmp_path / f"{layout}-{compensate}", calib_txt, layout, compensate=compensate, **protect)
        out = pipeline.select(r, art, model_bundle=bundle)
        info = json.loads((out / "fbn_prune.json").read_text())
        assert info["verified"] and info["verification"]["ok"]
        kept = [torch.tensor(info["kept"][str(i)]) for i in range(len(info["kept"]))]
        loaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=(layout == "exact")).eval()
        predictors = compensate_layers(model, adapter, kept, art, r.selection.ridge).predictors if compensate == "lstsq" else None
        with masked(model, adapter, kept, predictors):
            ref = logits(model, ids)
        assert not torch.allclose(ref, logits(model, ids), atol=1e-4), "masking must change the output"
        torch.testing.assert_close(logits(loaded, ids), ref, atol=1e-4, rtol=1e-4)
        widths = [k.numel() for k in kept]
        if layout == "uniform":
            assert len(set(widths)) == 1
        else:
            assert widths[0] == info["original_widths"][0]  # protected
        for name in ("config.json", "generation_config.json", "README.md", "recipe.yaml", "tokenizer.json"):
            assert (out / name).is_file(), name
        assert list(out.glob("*.safetensors"))
        assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
        assert (out / "modeling_fbn.py").is_file() == (layout == "exact")


@pytest.fixture(params=ARCHS)
def arch(request):
    return request.param


def test_compensation_brings_output_closer_to_original(tiny_dir, calib_txt, tmp_path):
    """On held-out text, the compensated model's logits are nearer the unpruned model's than plain deletion's."""
    folder = tiny_dir("llama")
    r = small_recipe(folder, tmp_path / "x", calib_txt, ratio=0.5)
    bundle = pipeline._load(r)
    art = pipeline.networks(r.override({"calibration.samples": 40}), tmp_path / "net", model_bundle=bundle, progress=False)
    _, model, tok = bundle
    ids = [tok(t)["input_ids"][:64] for t in sample_texts(6, seed=99)]  # held out: not calibration text
    full = logits(model, ids)
    errors = {}
    for mode in ("none", "lstsq"):
        out = pipeline.select(r.override({"out": str(tmp_path / mode), "selection.compensate": mode}), art, model_bundle=bundle)
        loaded = AutoModelForCausalLM.from_pretrained(out).eval()
        errors[mode] = (logits(loaded, ids) - full).pow(2).mean().item()
    assert errors["lstsq"] < errors["none"]


@pytest.mark.parametrize("arch", ["gpt2", "opt", "gpt_neox"])
def test_bias_compensation_is_exact_and_moves_only_the_bias(arch, tiny_dir, calib_txt, tmp_path):
    """FLAP's bias compensation: verified export; the pruned model equals the original with the removed
    channels held at their calibration mean; only the down bias differs from plain deletion."""
    folder = tiny_dir(arch)
    r = small_recipe(folder, tmp_path / "x", calib_txt, ratio=0.5).override({"selection.method": "flap"})
    bundle = pipeline._load(r)
    art = pipeline.networks(r, tmp_path / "net", model_bundle=bundle, progress=False)
    _, model, tok = bundle
    adapter = adapter_for(model.config)
    ids = [tok("the quick brown fox jumps over the lazy dog")["input_ids"]]
    outs = {m: pipeline.select(r.override({"out": str(tmp_path / m), "selection.compensate": m}), art, model_bundle=bundle)
            for m in ("none", "bias")}
    info = json.loads((outs["bias"] / "fbn_prune.json").read_text())
    assert info["verified"] and info["selection"]["compensate"] == "bias"
    kept = [torch.tensor(info["kept"][str(i)]) for i in range(len(info["kept"]))]
    predictors = compensate_layers(model, adapter, kept, art, r.selection.ridge, "bias").predictors
    with masked(model, adapter, kept, predictors):
        ref = logits(model, ids)
    loaded = {m: AutoModelForCausalLM.from_pretrained(o).eval() for m, o in outs.items()}
    torch.testing.assert_close(logits(loaded["bias"], ids), ref, atol=1e-4, rtol=1e-4)
    a, b = loaded["none"].state_dict(), loaded["bias"].state_dict()
    differ = {k for k in a if not torch.equal(a[k], b[k])}
    assert differ and all(k.endswith(f"{adapter.down}.bias") for k in differ), differ


def test_bias_compensation_needs_a_bias(tiny_dir, calib_txt, tmp_path):
    r = small_recipe(tiny_dir("llama"), tmp_path / "x", calib_txt).override({"selection.compensate": "bias"})
    bundle = pipeline._load(r)
    art = pipeline.networks(r, tmp_path / "net", model_bundle=bundle, progress=False)
    with pytest.raises(UserError, match="needs a down-projection bias"):
        pipeline.select(r, art, model_bundle=bundle)


def test_same_seed_same_kept_indices(tiny_dir, calib_txt, tmp_path):
    folder = tiny_dir("llama")
    outs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 5)):
        r = small_recipe(folder, tmp_path / name, calib_txt).override({"seed": seed, "export.layout": "padded"})
        outs.append(json.loads((pipeline.prune(r, progress=False) / "fbn_prune.json").read_text())["kept"])
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


@pytest.mark.parametrize("layout,ratio", [("uniform", 0.25), ("padded", 0.4), ("exact", 0.1)])
def test_ratio_is_hit(tiny_dir, calib_txt, tmp_path, layout, ratio):
    r = small_recipe(tiny_dir("qwen2"), tmp_path / "o", calib_txt, ratio=ratio, round_to=1, min_width=1)
    r = r.override({"export.layout": layout})
    info = json.loads((pipeline.prune(r, progress=False) / "fbn_prune.json").read_text())
    total = sum(info["original_widths"])
    assert abs(info["selection"]["achieved_ratio"] - ratio) <= 1 / total * len(info["widths"])


def test_params_ratio(tiny_dir, calib_txt, tmp_path):
    r = small_recipe(tiny_dir("llama"), tmp_path / "o", calib_txt, ratio=0.1, ratio_of="params", round_to=1, min_width=1)
    info = json.loads((pipeline.prune(r.override({"export.layout": "exact"}), progress=False) / "fbn_prune.json").read_text())
    removed = 1 - info["params"]["after"] / info["params"]["before"]
    assert abs(removed - 0.1) < 0.01


def test_threshold_rule_is_membership(tiny_dir, calib_txt, tmp_path):
    r = small_recipe(tiny_dir("llama"), tmp_path / "o", calib_txt, "exact", threshold=3.0, round_to=1, min_width=1)
    out = pipeline.prune(r, progress=False, networks_dir=str(tmp_path / "net"))
    info = json.loads((out / "fbn_prune.json").read_text())
    art = Networks(tmp_path / "net")
    for i in range(art.n_layers):
        in_network = (art.maps(i).abs() > 3.0).any(0).any(0)
        assert info["kept"][str(i)] == torch.nonzero(in_network).flatten().tolist()


def test_select_reuses_artifact_without_ica(tiny_dir, calib_txt, tmp_path, monkeypatch):
    r = small_recipe(tiny_dir("gpt2"), tmp_path / "a", calib_txt)
    pipeline.prune(r, progress=False, networks_dir=str(tmp_path / "net"))
    import fbn_prune.decompose.ica as ica

    monkeypatch.setattr(ica, "decompose", lambda *a, **k: pytest.fail("select must not run ICA"))
    out = pipeline.select(r.override({"out": str(tmp_path / "b"), "selection.ratio": 0.5}), Networks(tmp_path / "net"))
    info = json.loads((out / "fbn_prune.json").read_text())
    assert info["selection"]["achieved_ratio"] == pytest.approx(0.5, abs=0.05)


def test_fbn_variants_select_verified_checkpoints_from_one_artifact(tiny_dir, calib_txt, tmp_path):
    """fbn-recur and fbn-group come from the same artifact as fbn (no new capture), give verified checkpoints
    of the same size, and fbn-group keeps about the same share of every functional group of each layer."""
    from fbn_prune.select.scores import groups

    r = small_recipe(tiny_dir("llama"), tmp_path / "fbn", calib_txt, ratio=0.5, round_to=1, min_width=1)
    pipeline.prune(r, progress=False, networks_dir=str(tmp_path / "net"))
    art = Networks(tmp_path / "net")
    kept = {}
    for method in ("fbn", "fbn-recur", "fbn-group"):
        out = pipeline.select(r.override({"out": str(tmp_path / "sel" / method), "selection.method": method}), art)
        info = json.loads((out / "fbn_prune.json").read_text())
        assert info["verified"] and info["selection"]["method"] == method
        kept[method] = info["kept"]
    assert [len(k) for k in kept["fbn-group"].values()] == [len(k) for k in kept["fbn"].values()]
    for i in range(art.n_layers):
        group = groups(art.maps(i))
        mask = torch.zeros(len(group), dtype=torch.bool)
        mask[kept["fbn-group"][str(i)]] = True
        shares = {int(g): (mask[group == g].double().mean().item(), int((group == g).sum())) for g in group.unique()}
        assert len(shares) > 1
        # one share c for all groups, up to rounding: a group of n keeps between c and c + 1/n of its channels
        for g, (got, n) in shares.items():
            for h, (other, m) in shares.items():
                assert abs(got - other) <= 1 / n + 1 / m + 1e-9, (i, g, h, got, other)


def test_interrupted_decomposition_resumes(tiny_dir, calib_txt, tmp_path):
    r = small_recipe(tiny_dir("llama"), tmp_path / "a", calib_txt)
    art = pipeline.networks(r, tmp_path / "net", progress=False)
    first = [art.maps(i).clone() for i in range(art.n_layers)]
    maps = tmp_path / "net" / "maps"
    lost = list(maps.glob("layer002*"))
    assert lost, sorted(p.name for p in maps.iterdir())
    for p in lost:
        p.unlink()  # as if killed half-way
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in maps.iterdir()}
    art2 = pipeline.networks(r, tmp_path / "net", progress=False)
    for i in range(art.n_layers):
        torch.testing.assert_close(art2.maps(i), first[i])
    # resumed: only the lost layer was decomposed again; every finished file is untouched
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in maps.iterdir() if p.name in kept} == kept
    assert {p.name for p in lost} <= {p.name for p in maps.iterdir()}


def test_input_model_is_never_modified(tiny_dir, calib_txt, tmp_path):
    import hashlib

    folder = tiny_dir("phi3")
    digest = lambda: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}  # noqa: E731
    before = digest()
    pipeline.prune(small_recipe(folder, tmp_path / "o", calib_txt), progress=False)
    assert digest() == before


def test_failed_verification_leaves_nothing(tiny_dir, calib_txt, tmp_path, monkeypatch):
    import fbn_prune.export.surgery as surgery

    real = surgery.slice_state

    def corrupt(state, adapter, kept, widths, original):  # keep the wrong channels
        wrong = [torch.sort(torch.randperm(o)[: k.numel()]).values for k, o in zip(kept, original)]
        return real(state, adapter, wrong, widths, original)

    monkeypatch.setattr(surgery, "slice_state", corrupt)
    out = tmp_path / "o"
    with pytest.raises(VerificationError):
        pipeline.prune(small_recipe(tiny_dir("llama"), out, calib_txt), progress=False)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".o.")]


def test_failed_overwrite_keeps_old_output(tiny_dir, calib_txt, tmp_path, monkeypatch):
    out = pipeline.prune(small_recipe(tiny_dir("llama"), tmp_path / "o", calib_txt), progress=False)
    before = (out / "fbn_prune.json").read_text()
    import fbn_prune.export.verify as verify

    monkeypatch.setattr(verify, "TOLERANCE", {torch.float32: -1.0})  # nothing can pass
    with pytest.raises(VerificationError):
        pipeline.prune(small_recipe(tiny_dir("llama"), tmp_path / "o", calib_txt), overwrite=True, progress=False)
    assert (out / "fbn_prune.json").read_text() == before


def test_sharded_output_loads(tiny_dir, calib_txt, tmp_path):
    r = small_recipe(tiny_dir("llama"), tmp_path / "o", calib_txt).override({"export.max_shard_size": "100KB"})
    out = pipeline.prune(r, progress=False)
    assert len(list(out.glob("model-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    AutoModelForCausalLM.from_pretrained(out)


def test_too_few_tokens_for_components(tiny_dir, calib_txt, tmp_path):
    r = small_recipe(tiny_dir("llama"), tmp_path / "o", calib_txt).override(
        {"decomposition.components": 90, "calibration.samples": 4, "calibration.seq_len": 16})
    with pytest.raises(UserError, match="fewer than the 90 components"):
        pipeline.prune(r, progress=False)


def test_bfloat16_export(tiny_dir, calib_txt, tmp_path):
    r = small_recipe(tiny_dir("llama"), tmp_path / "o", calib_txt).override({"export.dtype": "bfloat16"})
    out = pipeline.prune(r, progress=False)
    m = AutoModelForCausalLM.from_pretrained(out)
    assert m.dtype == torch.bfloat16
