"""Healing: distillation from the original lowers the pruned model's KL on held-out text, widths unchanged."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from clitools import bad, run
from tiny import sample_texts, save_tiny, tiny_tokenizer
from transformers import AutoModelForCausalLM

from fbn_prune import pipeline
from fbn_prune.heal.distill import HealSettings, distill_loss, token_blocks
from fbn_prune.config.recipe import Recipe


@pytest.fixture(scope="module")
def pruned(tmp_path_factory, tiny_dir):
    """A tiny llama and its 40%-pruned exact-layout checkpoint (per-layer widths)."""
    root = tmp_path_factory.mktemp("heal")
    calib = root / "calib.txt"
    calib.write_text("\n\n".join(sample_texts(40, seed=3)) + "\n")
    model = tiny_dir("llama")
    recipe = Recipe.from_dict({
        "model": str(model), "out": str(root / "pruned"), "device": "cpu",
        "calibration": {"source": str(calib), "samples": 24, "seq_len": 64, "holdout": 2},
        "decomposition": {"runs": 2, "components": 8, "max_iter": 100},
        "selection": {"ratio": 0.4, "round_to": 8, "min_width": 8, "method": "wanda-sp"},
        "export": {"layout": "exact"},
    })
    pipeline.prune(recipe, progress=False)
    text = root / "heal.txt"
    text.write_text("\n\n".join(sample_texts(60, seed=11)) + "\n")
    return model, root / "pruned", text


@pytest.mark.parametrize("mode", [["--lora", "8"], ["--full"]])
def test_heal_lowers_heldout_kl_and_keeps_widths(pruned, tmp_path, mode):
    model, ckpt, text = pruned
    out = tmp_path / "healed"
    lr = ["--lr", "1e-2"] if mode[0] == "--lora" else ["--lr", "1e-3"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = run("heal", ckpt, "--out", out, "--calib", text, "--steps", 80, "--seq-len", 32, "--batch-size", 4,
                "--no-progress", *mode, *lr)
    # the libraries' deprecations between themselves (peft on transformers) are not shown to the user
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    assert r.exit_code == 0, r.output
    info = json.loads((out / "fbn_prune.json").read_text())
    h = info["healing"]
    # a random tiny teacher is hard to imitate: 80 steps take a tenth (full) or a twentieth (LoRA) off the KL
    assert h["heldout_kl_after"] < (0.95 if mode[0] == "--lora" else 0.9) * h["heldout_kl_before"], h
    assert h["steps"] == 80 and h["tokens"] == 80 * 4 * 32 and len(h["loss_curve"]) >= 40
    reads = 80 * 4 / h["data"]["train_blocks"]  # each step reads 4 of the training blocks
    assert f"the training text read {reads:.1f} times" in r.output
    assert h["settings"]["mode"] == ("lora" if mode[0] == "--lora" else "full")
    assert info["verification"]["ok"] and info["widths"] == json.loads((ckpt / "fbn_prune.json").read_text())["widths"]
    before = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True)
    after = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    shapes = {k: v.shape for k, v in before.state_dict().items()}
    assert shapes == {k: v.shape for k, v in after.state_dict().items()}
    changed = [k for k, v in after.state_dict().items() if not torch.equal(v, before.state_dict()[k])]
    assert any("mlp" in k for k in changed)
    assert not (out / "adapter_config.json").exists()  # LoRA merged, plain weights


@pytest.fixture(scope="module")
def pruned_deci(tmp_path_factory):
    """A tiny llama with FFN 512 and its deci-layout checkpoint (per-layer widths, multiples of 256)."""
    root = tmp_path_factory.mktemp("heal_deci")
    calib = root / "calib.txt"
    calib.write_text("\n\n".join(sample_texts(40, seed=3)) + "\n")
    model = save_tiny("llama", root / "src", intermediate_size=512)
    recipe = Recipe.from_dict({
        "model": str(model), "out": str(root / "pruned"), "device": "cpu",
        "calibration": {"source": str(calib), "samples": 16, "seq_len": 64, "holdout": 2},
        "decomposition": {"runs": 1, "components": 4},
        "selection": {"ratio": 0.3, "round_to": 256, "min_width": 256, "method": "magnitude", "protect_first": 1},
        "export": {"layout": "deci"},
    })
    pipeline.prune(recipe, progress=False)
    text = root / "heal.txt"
    text.write_text("\n\n".join(sample_texts(30, seed=11)) + "\n")
    return root / "pruned", text


def test_heal_deci_checkpoint_reloads_as_the_healed_model(pruned_deci, tmp_path):
    """`heal` on a deci checkpoint: the healed folder is still DeciLM (same block_configs, widths, shipped
    modeling_fbn.py) and reloads with the in-memory healed model's logits (heal's own verification)."""
    ckpt, text = pruned_deci
    out = tmp_path / "healed"
    r = run("heal", ckpt, "--out", out, "--calib", text, "--steps", 6, "--seq-len", 32, "--batch-size", 2,
            "--no-progress", "--lora", "4", "--lr", "1e-2")
    assert r.exit_code == 0, r.output
    info = json.loads((out / "fbn_prune.json").read_text())
    before_info = json.loads((ckpt / "fbn_prune.json").read_text())
    v = info["verification"]
    print(f"healed deci reload vs in-memory healed: {v['max_abs_diff']:.2g} / top-1 {v['top1_agreement']:.0%}")
    assert v["ok"] and v["max_abs_diff"] < 1e-4 and v["top1_agreement"] == 1.0
    assert info["layout"] == "deci" and info["widths"] == before_info["widths"] and info["healing"]["steps"] == 6
    cfg, before_cfg = (json.loads((p / "config.json").read_text()) for p in (out, ckpt))
    assert cfg["model_type"] == "nemotron-nas" and cfg["block_configs"] == before_cfg["block_configs"]
    assert (out / "modeling_fbn.py").read_text() == (ckpt / "modeling_fbn.py").read_text()
    before = AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True)
    after = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert type(after).__name__ == "DeciLMForCausalLM"
    assert {k: v.shape for k, v in after.state_dict().items()} == {k: v.shape for k, v in before.state_dict().items()}
    assert any("mlp" in k and not torch.equal(v, before.state_dict()[k]) for k, v in after.state_dict().items())


def test_heal_is_deterministic(pruned, tmp_path):
    _, ckpt, text = pruned
    outs = []
    for name in ("a", "b"):
        r = run("heal", ckpt, "--out", tmp_path / name, "--calib", text, "--steps", 3, "--seq-len", 32,
                "--batch-size", 2, "--no-progress", "--lora", "2")
        assert r.exit_code == 0, r.output
        outs.append((tmp_path / name / "model.safetensors").read_bytes())
    assert outs[0] == outs[1]


def test_distill_loss_is_zero_for_the_teacher_itself():
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    assert distill_loss(logits, logits, ids, HealSettings()).abs().item() < 1e-6
    assert distill_loss(logits + torch.randn(2, 5, 11), logits, ids, HealSettings()).item() > 0.01


def test_heldout_documents_are_disjoint_from_training():
    tok = tiny_tokenizer()
    texts = sample_texts(20, seed=5)
    blocks = token_blocks(tok, texts, HealSettings(seq_len=16, heldout_fraction=0.25))
    assert blocks.heldout_documents == 5 and blocks.documents == 15
    train = {tuple(b.tolist()) for b in blocks.train}
    assert not any(tuple(b.tolist()) in train for b in blocks.heldout)


def test_bad_heal_input(pruned, tmp_path):
    model, ckpt, text = pruned
    bad(["heal", ckpt, "--out", tmp_path / "x", "--calib", text, "--steps", 0], "--steps must be at least 1")
    bad(["heal", ckpt, "--out", tmp_path / "x", "--calib", text, "--steps", 2, "--tokens", 5], "not both")
    bad(["heal", ckpt, "--out", tmp_path / "x", "--calib", text, "--lora", 2, "--full"], "not both")
    bad(["heal", ckpt, "--out", ckpt, "--calib", text, "--overwrite"], "")
    bad(["heal", ckpt, "--out", tmp_path / "x", "--calib", tmp_path / "missing.txt"], "does not exist")
    bad(["heal", model, "--out", tmp_path / "x", "--calib", text], "not an fbn_prune checkpoint")
    same_shape = save_tiny("llama", tmp_path / "same", seed=7)  # same vocabulary, other weights
    bad(["heal", ckpt, "--out", tmp_path / "x", "--calib", text, "--base", same_shape], "is not the model")
    other = save_tiny("llama", tmp_path / "other", vocab_size=300)
    bad(["heal", ckpt, "--out", tmp_path / "x", "--calib", text, "--base", other], "--base")


def _heal_recipe(folder):
    """(calibration text, recipe) in ``folder`` for a small prune with a 2-rank LoRA healing section."""
    calib = folder / "calib.txt"
    calib.write_text("\n\n".join(sample_texts(40, seed=3)) + "\n")
    recipe = folder / "r.yaml"
    recipe.write_text("calibration: {samples: 24, seq_len: 64, holdout: 2}\n"
                      "decomposition: {runs: 2, components: 8, max_iter: 100}\n"
                      "selection: {ratio: 0.4, method: wanda-sp}\n"
                      "heal: {seq_len: 32, batch_size: 2, lora_rank: 2}\n")
    return calib, recipe


def test_prune_heal_steps_writes_the_healed_model(pruned, tmp_path):
    """`prune --heal-steps N` prunes, heals and leaves only the healed checkpoint at --out."""
    model, _, text = pruned
    work = tmp_path / "work"
    work.mkdir()
    calib, recipe = _heal_recipe(work)
    out = work / "out"
    r = run("prune", model, "--recipe", recipe, "--calib", calib, "--out", out, "--device", "cpu",
            "--heal-steps", 3, "--heal-calib", text, "--no-progress")
    assert r.exit_code == 0, r.output
    info = json.loads((out / "fbn_prune.json").read_text())
    assert info["healing"]["steps"] == 3 and info["healing"]["text_source"].endswith("heal.txt")
    assert info["healing"]["from_checkpoint"] == "this run's prune (not kept)"
    assert info["verification"]["ok"] and info["selection"]["method"] == "wanda-sp"
    used = Recipe.load(out / "recipe.yaml")
    assert used.out == str(out) and used.heal.steps == 3 and used.heal.texts == str(text)
    assert sorted(p.name for p in work.iterdir()) == ["calib.txt", "out", "r.yaml"], "no temporary folder left"


def test_prune_heal_steps_refuses_an_existing_out_before_pruning(tiny_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    bad(["prune", tiny_dir("llama"), "--out", out, "--heal-steps", 2], "out")
    assert (out / "keep.txt").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_prune_heal_steps_refuses_a_bad_training_text_before_pruning(tiny_dir, tmp_path):
    out = tmp_path / "out"
    bad(["prune", tiny_dir("llama"), "--out", out, "--heal-steps", 2, "--heal-calib", tmp_path / "missing.txt"],
        "missing.txt")
    bad(["prune", tiny_dir("llama"), "--out", out, "--heal-steps", 2, "--heal-calib", "generated"], "not 'generated'")
    assert list(tmp_path.iterdir()) == []


def test_heal_section_is_checked_and_sets_the_training():
    from fbn_prune.errors import UserError
    from fbn_prune.heal.run import heal_texts, settings_for

    for bad_heal, what in (({"steps": -1}, "heal.steps"), ({"lora_rank": 0}, "heal.lora_rank"),
                           ({"lr": 0}, "heal.lr"), ({"kl_weight": 0, "lm_weight": 0}, "nothing to train")):
        with pytest.raises(UserError, match=what):
            Recipe.from_dict({"heal": bad_heal})
    full = settings_for(Recipe.from_dict({"seed": 4, "heal": {"steps": 7, "lora_rank": None}}))
    assert (full.steps, full.lora_rank, full.lr, full.seed) == (7, None, 2e-5, 4)
    lora = settings_for(Recipe.from_dict({"heal": {"steps": 7}}))
    assert (lora.lora_rank, lora.lr) == (16, 5e-4)
    assert heal_texts(Recipe.from_dict({"calibration": {"source": "a.jsonl", "field": "body"}})) == ("a.jsonl", "body")
    assert heal_texts(Recipe.from_dict({"calibration": {"task": "piqa"}}))[0] == "builtin:wikitext2-valid"
    assert heal_texts(Recipe.from_dict({"calibration": {"source": "generated"}}))[0] == "builtin:wikitext2-valid"


def test_select_heals_as_the_networks_recipe_says(pruned, tmp_path):
    """`networks` keeps the recipe's heal section for `select`, which heals (no flag needed); `--heal-steps 0`
    turns it off, `--heal-steps N` sets it; only the healed checkpoint is left at --out."""
    model, _, text = pruned
    work = tmp_path / "work"
    work.mkdir()
    calib = work / "calib.txt"
    calib.write_text("\n\n".join(sample_texts(40, seed=3)) + "\n")
    recipe = work / "r.yaml"
    recipe.write_text(f"heal: {{steps: 2, seq_len: 32, batch_size: 2, lora_rank: 2, texts: {json.dumps(str(text))}}}\n")
    net = work / "net"
    r = run("networks", model, "--recipe", recipe, "--calib", calib, "--calib-samples", 24, "--seq-len", 64,
            "--runs", 2, "--components", 8, "--device", "cpu", "--out", net, "--no-progress")
    assert r.exit_code == 0, r.output
    r = run("select", net, "--out", work / "healed", "--ratio", 0.3, "--method", "wanda-sp", "--no-progress")
    assert r.exit_code == 0, r.output
    h = json.loads((work / "healed" / "fbn_prune.json").read_text())["healing"]
    assert h["steps"] == 2 and h["from_checkpoint"] == "this run's select (not kept)" and h["text_source"].endswith("heal.txt")
    r = run("select", net, "--out", work / "plain", "--ratio", 0.3, "--method", "wanda-sp", "--heal-steps", 0,
            "--no-progress")
    assert r.exit_code == 0, r.output
    plain = json.loads((work / "plain" / "fbn_prune.json").read_text())
    assert "healing" not in plain or plain["healing"] is None
    assert plain["widths"] == json.loads((work / "healed" / "fbn_prune.json").read_text())["widths"]
    r = run("select", net, "--out", work / "three", "--ratio", 0.3, "--method", "wanda-sp", "--heal-steps", 3,
            "--no-progress")
    assert r.exit_code == 0, r.output
    assert json.loads((work / "three" / "fbn_prune.json").read_text())["healing"]["steps"] == 3
    assert sorted(p.name for p in work.iterdir()) == ["calib.txt", "healed", "net", "plain", "r.yaml", "three"]


def test_compute_bfloat16_autocast_trains_and_is_recorded(pruned, tmp_path):
    """--compute bfloat16 runs the products under autocast (other numbers than float32, the KL still falls);
    the record says what was used; auto resolves by the hardware."""
    from fbn_prune._runtime.dtypes import autocast_dtype, native_bfloat16

    model, ckpt, text = pruned
    kl = {}
    for compute in ("float32", "bfloat16"):
        out = tmp_path / compute
        r = run("heal", ckpt, "--out", out, "--calib", text, "--steps", 80, "--seq-len", 32, "--batch-size", 4,
                "--lr", "1e-2", "--compute", compute, "--no-progress")
        assert r.exit_code == 0, r.output
        h = json.loads((out / "fbn_prune.json").read_text())["healing"]
        assert h["settings"]["compute"] == compute
        assert h["settings"]["autocast"] == (None if compute == "float32" else "bfloat16")
        assert h["heldout_kl_after"] < h["heldout_kl_before"], h
        kl[compute] = h["heldout_kl_after"]
    assert kl["float32"] != kl["bfloat16"], "autocast changed nothing: it was not applied"
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) == (torch.bfloat16 if native_bfloat16(cpu) else None)
    assert autocast_dtype("float32", cpu) is None and autocast_dtype("bfloat16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="compute"):
        autocast_dtype("fp8", cpu)
    bad(["heal", ckpt, "--out", tmp_path / "x", "--calib", text, "--compute", "fp8"], "compute")


def test_chained_healing_never_writes_over_an_input(pruned, tmp_path, calib_txt):
    """--out holding the networks artifact, the calibration file or the healing text is refused before any
    work, with --heal-steps as without (--overwrite included)."""
    import shutil

    model, ckpt, text = pruned
    net = tmp_path / "net"
    r = run("networks", model, "--calib", calib_txt, "--calib-samples", 24, "--seq-len", 64, "--runs", 2,
            "--components", 8, "--device", "cpu", "--out", net, "--no-progress")
    assert r.exit_code == 0, r.output
    ck = tmp_path / "ck"
    shutil.copytree(ckpt, ck)
    shutil.copytree(net, ck / "net")
    shutil.copy(calib_txt, ck / "calib.txt")
    shutil.copy(text, ck / "heal.txt")
    listing = sorted(p.name for p in ck.iterdir())
    heal_args = ["--heal-steps", 2, "--heal-calib", text]
    bad(["select", ck / "net", "--out", ck, "--overwrite", "--ratio", 0.3, *heal_args], "networks folder")
    bad(["select", net, "--out", ck, "--overwrite", "--ratio", 0.3, "--heal-steps", 2, "--heal-calib", ck / "heal.txt"],
        "healing text")
    bad(["prune", model, "--out", ck, "--overwrite", "--calib", ck / "calib.txt", "--device", "cpu", *heal_args],
        "calibration file")
    assert sorted(p.name for p in ck.iterdir()) == listing
    assert (ck / "net" / "networks.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "net"], "no temporary folder left"


# ----------------------------------------------------------------------------- stopping and resuming
def _interrupt_at(monkeypatch, call: int | None) -> list[int]:
    """Count the training steps (calls of the loss); with ``call``, send this process SIGINT (Ctrl-C) during
    that step."""
    import os
    import signal

    from fbn_prune.heal import distill as distill_module

    calls: list[int] = []
    real = distill_module.distill_loss

    def counting(*a, **k):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(distill_module, "distill_loss", counting)
    return calls


def test_a_stopped_heal_resumes_to_the_same_weights(pruned, tmp_path, monkeypatch):
    """Ctrl-C finishes the step, saves the training state beside --out and exits 130; the same command
    continues from that step and writes the very weights of an unbroken run."""
    _, ckpt, text = pruned
    common = ["--calib", text, "--steps", 6, "--seq-len", 32, "--batch-size", 2, "--no-progress", "--lora", "2"]
    assert run("heal", ckpt, "--out", tmp_path / "whole", *common).exit_code == 0
    whole = tmp_path / "whole"

    calls = _interrupt_at(monkeypatch, 3)
    r = run("heal", ckpt, "--out", tmp_path / "b", *common)
    assert r.exit_code == 130, r.output
    assert "healing stopped after step 3 of 6" in r.output and "run the same command again" in r.output
    assert not (tmp_path / "b").exists() and (tmp_path / ".b.heal-state" / "state.pt").is_file()
    assert len(calls) == 3

    calls = _interrupt_at(monkeypatch, None)
    r = run("heal", ckpt, "--out", tmp_path / "b", *common)
    assert r.exit_code == 0, r.output
    assert len(calls) == 3, "only the three steps left were trained"
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()
    a, b = (json.loads((d / "fbn_prune.json").read_text())["healing"] for d in (whole, tmp_path / "b"))
    assert b["loss_curve"] == a["loss_curve"] and b["steps"] == 6 and b["heldout_kl_after"] == a["heldout_kl_after"]
    assert not (tmp_path / ".b.heal-state").exists(), "the state is removed once the checkpoint is in place"


def test_a_saved_state_for_other_settings_is_not_resumed(pruned, tmp_path, monkeypatch):
    _, ckpt, text = pruned
    common = ["--calib", text, "--seq-len", 32, "--batch-size", 2, "--no-progress", "--lora", "2"]
    _interrupt_at(monkeypatch, 2)
    assert run("heal", ckpt, "--out", tmp_path / "h", *common, "--steps", 5).exit_code == 130
    calls = _interrupt_at(monkeypatch, None)
    r = run("heal", ckpt, "--out", tmp_path / "h", *common, "--steps", 4)  # another schedule: start over
    assert r.exit_code == 0, r.output
    assert len(calls) == 4 and json.loads((tmp_path / "h" / "fbn_prune.json").read_text())["healing"]["steps"] == 4
    assert not (tmp_path / ".h.heal-state").exists()


def test_a_crashed_run_resumes_from_its_last_periodic_save(pruned, tmp_path):
    """A run that dies without warning (here: an error in step 4) keeps the state of its last periodic save."""
    from fbn_prune.heal import distill as distill_module
    from fbn_prune.heal.state import StateStore

    model, ckpt, text = pruned
    teacher = AutoModelForCausalLM.from_pretrained(model)
    settings = HealSettings(steps=5, seq_len=32, batch_size=2, lora_rank=2, compute="float32")
    blocks = token_blocks(tiny_tokenizer(), text.read_text().split("\n\n"), settings)

    def student():
        return AutoModelForCausalLM.from_pretrained(ckpt, trust_remote_code=True)

    whole, _ = distill_module.distill(student(), teacher, blocks, settings, progress=False)
    store = StateStore(tmp_path / "state", "k", every_s=0.0)  # save after every step
    real, calls = distill_module.distill_loss, []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("the machine went away")
        return real(*a, **k)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(distill_module, "distill_loss", failing)
        with pytest.raises(RuntimeError):
            distill_module.distill(student(), teacher, blocks, settings, progress=False, state=store)
    assert store.load().step == 3
    assert StateStore(tmp_path / "state", "another key").load() is None
    resumed, result = distill_module.distill(student(), teacher, blocks, settings, progress=False, state=store)
    assert result.steps == 5 and store.load().step == 5
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_a_second_ctrl_c_stops_at_once():
    import os
    import signal

    from fbn_prune.heal.state import stop_requests

    before = signal.getsignal(signal.SIGINT)
    with stop_requests() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_prune_heal_steps_resumes_a_stopped_healing(pruned, tmp_path, monkeypatch):
    """`prune --heal-steps`: the prune is run again (same bytes), the healing continues from its saved step."""
    model, _, text = pruned
    calib, recipe = _heal_recipe(tmp_path)
    args = ["prune", model, "--recipe", recipe, "--calib", calib, "--out", tmp_path / "out", "--device", "cpu",
            "--heal-steps", 4, "--heal-calib", text, "--no-progress"]
    _interrupt_at(monkeypatch, 2)
    r = run(*args)
    assert r.exit_code == 130 and "healing stopped after step 2 of 4" in r.output, r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.heal-state", "calib.txt", "r.yaml"]
    calls = _interrupt_at(monkeypatch, None)
    assert run(*args).exit_code == 0
    assert len(calls) == 2 and json.loads((tmp_path / "out" / "fbn_prune.json").read_text())["healing"]["steps"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.txt", "out", "r.yaml"]


def test_a_damaged_or_blocked_state_never_stops_the_healing(pruned, tmp_path, caplog):
    """A state file that cannot be read is ignored (the run starts over); a state that cannot be written
    (here a file where its folder should be) is a warning, and the healed checkpoint is still written."""
    _, ckpt, text = pruned
    common = ["--calib", text, "--steps", 2, "--seq-len", 32, "--batch-size", 2, "--no-progress", "--lora", "2"]
    (tmp_path / ".a.heal-state").mkdir()
    (tmp_path / ".a.heal-state" / "state.pt").write_bytes(b"not a torch file")
    r = run("heal", ckpt, "--out", tmp_path / "a", *common)
    assert r.exit_code == 0, r.output
    assert "ignoring the unreadable healing state" in caplog.text and not (tmp_path / ".a.heal-state").exists()
    (tmp_path / ".b.heal-state").write_text("in the way")
    r = run("heal", ckpt, "--out", tmp_path / "b", *common)
    assert r.exit_code == 0, r.output
    assert "could not save the healing state" in caplog.text
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == (tmp_path / "a" / "model.safetensors").read_bytes()
