"""`fbn-prune search`: bisection over the ratio through select + eval, on the tiny Llama and a tiny text file."""

from __future__ import annotations

import json

import pytest
from clitools import bad, run
from tiny import sample_texts

from fbn_prune import search as searching
from fbn_prune.config.recipe import Recipe
from fbn_prune.errors import UserError


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("FBN_PRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FBN_PRUNE_DATA", str(tmp_path))
    docs = [" ".join(t.split()[:20]) for t in sample_texts(5, seed=4)]
    (tmp_path / "notes.txt").write_text("\n\n".join(docs) + "\n")
    return tmp_path


def _args(tiny_dir, calib_txt, env, *extra):
    return ["search", tiny_dir("llama"), "--ppl", env / "notes.txt", "--method", "magnitude", "--calib", calib_txt,
            "--calib-samples", "16", "--device", "cpu", "--batch-size", "4", "--no-progress", *extra]


def test_grid():
    assert searching.Grid(0.2, 0.8).ratios() == [0.2, 0.4, 0.6, 0.8]
    assert searching.Grid(0.05, 0.9).ratios()[-1] == 0.9 and len(searching.Grid(0.05, 0.9).ratios()) == 18
    with pytest.raises(UserError, match="--step"):
        searching.Grid(0, 0.5).ratios()


def test_bisection_finds_the_known_ratio_and_resumes(env, tiny_dir, calib_txt, monkeypatch):
    """The gate holds up to 0.4 (by construction); bisection over 0.1 ... 0.9 finds 0.4 in 4 probes, and a
    search interrupted after its second probe continues with the rest."""
    real = searching._probe
    probed: list[float] = []

    def probe(recipe, artifact, bundle, settings, gate, ratio, work):
        probed.append(ratio)
        if len(probed) == 3 and not getattr(probe, "resumed", False):
            raise KeyboardInterrupt  # interrupted during the third probe
        step, record = real(recipe, artifact, bundle, settings, gate, ratio, work)
        step.passed = ratio <= 0.4
        record.gate["passed"] = step.passed
        return step, record

    monkeypatch.setattr(searching, "_probe", probe)
    args = _args(tiny_dir, calib_txt, env, "--min-retention", "0.01", "--step", "0.1", "--out", env / "best")
    assert run(*args).exit_code == 130  # "interrupted."
    assert probed == [0.5, 0.2, 0.3] and not (env / "best").exists()
    history = json.loads((env / ".best.search" / "history.json").read_text())
    assert [s["ratio"] for s in history["steps"]] == [0.2, 0.5]
    probe.resumed = True
    probed.clear()
    r = run(*args)
    assert r.exit_code == 0, r.output
    assert probed == [0.3, 0.4], "the finished steps are not probed again"
    assert "largest ratio that holds the gate: 0.40" in r.output
    info = json.loads((env / "best" / "fbn_prune.json").read_text())
    assert info["selection"]["ratio"] == 0.4 and info["search"]["best"] == 0.4
    assert [s["ratio"] for s in info["search"]["steps"]] == [0.2, 0.3, 0.4, 0.5]
    assert not (env / ".best.search").exists()


def test_search_end_to_end(env, tiny_dir, calib_txt):
    out = env / "found"
    r = run(*_args(tiny_dir, calib_txt, env, "--min-retention", "0.01", "--step", "0.2", "--max-ratio", "0.8",
                   "--eval-dtype", "bfloat16", "--eval-max-length", "32", "--out", out))
    assert r.exit_code == 0, r.output
    assert "largest ratio that holds the gate: 0.80" in r.output  # a gate every ratio holds: the largest
    for name in ("eval.json", "eval.md", "eval-docs.jsonl", "search.json", "search.png", "model.safetensors"):
        assert (out / name).is_file(), name
    curve = json.loads((out / "search.json").read_text())
    assert curve["best"] == 0.8 and [s["ratio"] for s in curve["steps"]] == [0.4, 0.6, 0.8]
    row = next(m for m in curve["steps"][0]["metrics"] if m["metric"] == "word_perplexity")
    assert row["delta_low"] <= row["delta"] <= row["delta_high"]
    record = json.loads((out / "eval.json").read_text())
    assert record["gate"]["passed"] and record["pruned"]["base_check"]["verdict"] == "match"
    assert (record["settings"]["dtype"], record["settings"]["max_length"]) == ("bfloat16", 32)
    assert json.loads((out / "fbn_prune.json").read_text())["evaluation"]["gate"]["passed"]

    # a gate no ratio holds, from a recipe's evaluation section: exit 3, nothing written to --out
    recipe = env / "gate.yaml"
    recipe.write_text(f"evaluation:\n  tasks: [{json.dumps('ppl:' + str(env / 'notes.txt'))}]\n"
                      "  min_retention: 1.0\n  gate_on: ci\n")
    r = bad(["search", tiny_dir("llama"), "--recipe", recipe, "--method", "magnitude", "--calib", calib_txt,
             "--calib-samples", "16", "--device", "cpu", "--no-progress", "--step", "0.4", "--max-ratio", "0.8",
             "--out", env / "none"], "no ratio on the grid holds the gate", code=3)
    assert "may keep as little as" in r.output
    assert not (env / "none").exists()
    bad(_args(tiny_dir, calib_txt, env, "--out", env / "x"), "needs a gate")
    bad(_args(tiny_dir, calib_txt, env, "--max-drop", "1", "--out", out), "already exists")


def test_search_then_heal_writes_the_healed_model_and_resumes(env, tiny_dir, calib_txt, monkeypatch):
    """`search --heal-steps N`: the chosen checkpoint is healed into --out and evaluated again on the search's
    documents. A heal or an evaluation killed midway leaves --out untouched and keeps the search's history, so
    the next run probes nothing again, even with other healing settings (they shape no probe)."""
    from fbn_prune.heal import run as healing

    text = env / "heal.txt"
    text.write_text("\n\n".join(sample_texts(60, seed=11)) + "\n")
    recipe = env / "r.yaml"
    recipe.write_text("heal: {seq_len: 32, batch_size: 2, lora_rank: 2}\n")
    out = env / "found"
    args = _args(tiny_dir, calib_txt, env, "--recipe", recipe, "--min-retention", "0.01", "--step", "0.4",
                 "--max-ratio", "0.8", "--heal-calib", text, "--out", out)
    probed: list[float] = []
    real_probe = searching._probe

    def probe(*a):
        probed.append(a[5])
        return real_probe(*a)

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(searching, "_probe", probe)
    monkeypatch.setattr(healing, "distill", killed)
    assert run(*args, "--heal-steps", "2").exit_code == 130
    assert probed == [0.4, 0.8]
    assert not out.exists() and (env / ".found.search" / "history.json").is_file()
    assert sorted(p.name for p in env.iterdir() if "found" in p.name) == [".found.search"], "no temporary folder left"
    monkeypatch.undo()

    real_report = searching.report_healed
    monkeypatch.setattr(searching, "_probe", probe)
    monkeypatch.setattr(searching, "report_healed", killed)
    probed.clear()
    assert run(*args, "--heal-steps", "3").exit_code == 130  # killed while evaluating the healed model
    assert probed == [0.8], "only the chosen checkpoint is rebuilt (its folder went with the killed heal)"
    assert not out.exists() and (env / ".found.search" / "history.json").is_file()

    monkeypatch.setattr(searching, "report_healed", real_report)
    probed.clear()
    r = run(*args, "--heal-steps", "3")
    assert r.exit_code == 0, r.output
    assert probed == [0.8]
    assert "largest ratio that holds the gate: 0.80" in r.output and "healed 3 steps" in r.output
    info = json.loads((out / "fbn_prune.json").read_text())
    assert info["healing"]["steps"] == 3 and info["healing"]["from_checkpoint"] == "the search's chosen checkpoint (not kept)"
    assert info["search"]["best"] == 0.8 and info["evaluation"]["gate"]["passed"]
    assert Recipe.load(out / "recipe.yaml").selection.ratio == 0.8, "recipe.yaml reproduces the chosen ratio"
    record = json.loads((out / "eval.json").read_text())
    assert record["pruned"]["path"] == str(out.resolve()) and record["gate"]["passed"]
    curve = json.loads((out / "search.json").read_text())
    assert curve["healed"]["steps"] == 3 and curve["healed"]["passed"] and curve["best"] == 0.8
    healed_ppl = next(m for m in curve["healed"]["metrics"] if m["metric"] == "word_perplexity")["pruned"]
    before_ppl = next(m for m in curve["steps"][-1]["metrics"] if m["metric"] == "word_perplexity")["pruned"]
    assert healed_ppl != before_ppl, "the report is the healed model's"
    assert (out / "search.png").is_file()
    assert sorted(p.name for p in env.iterdir() if "found" in p.name) == ["found"]


def test_search_refuses_an_out_that_is_an_input(env, tiny_dir, calib_txt):
    """--out over the model (even with --overwrite) or over the healing text is refused before any work."""
    ck = env / "ck"
    r = run("prune", tiny_dir("llama"), "--out", ck, "--calib", calib_txt, "--calib-samples", 16, "--ratio", 0.1,
            "--method", "magnitude", "--device", "cpu", "--no-progress")
    assert r.exit_code == 0, r.output
    before = (ck / "fbn_prune.json").read_text()
    common = ["--ppl", env / "notes.txt", "--method", "magnitude", "--calib", calib_txt, "--calib-samples", "16",
              "--device", "cpu", "--no-progress", "--min-retention", "0.01", "--step", "0.4", "--max-ratio", "0.8"]
    bad(["search", ck, *common, "--out", ck, "--overwrite"], "--out")
    bad(["search", ck, *common, "--out", ck, "--overwrite", "--heal-steps", "2"], "--out")
    inside = ck / "heal.txt"
    inside.write_text("\n\n".join(sample_texts(20, seed=2)) + "\n")
    bad(["search", tiny_dir("llama"), *common, "--out", ck, "--overwrite", "--heal-steps", "2", "--heal-calib", inside],
        "healing text")
    assert (ck / "fbn_prune.json").read_text() == before and inside.is_file()
    assert not (env / ".ck.search").exists()
