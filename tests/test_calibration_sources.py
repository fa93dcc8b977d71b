"""Calibration sources: the built-in WikiText-2 sample (package data, license in provenance), files
(.txt, .jsonl, .gz), data: names (package first, then the data folder, no default folder), hf:
datasets (a local folder, the datasets cache offline, a clear refusal offline without it), and the
checks that refuse a bad source before any weights load."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import bad, run
from conftest import data_files
from tiny import sample_texts

from fbn_prune.texts import calibration as calib
from fbn_prune.texts import files as text_files
from fbn_prune.texts import hub as text_hub
from fbn_prune import pipeline
from fbn_prune.config import datadir
from fbn_prune.data import BUILTIN, DEFAULT_SOURCE
from fbn_prune.errors import UserError
from fbn_prune.config.recipe import Recipe

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DATA = REPO / "fbn_prune" / "data"
SMALL = ["--calib-samples", "24", "--seq-len", "64", "--runs", "2", "--components", "8", "--no-progress", "--device", "cpu"]


def recipe(**calibration) -> Recipe:
    return Recipe.from_dict({"calibration": calibration})


@pytest.fixture
def no_data_folder(monkeypatch):
    monkeypatch.delenv(datadir.DATA_ENV, raising=False)


@pytest.fixture
def weights_never_load(monkeypatch):
    """Make any weight load fail the test: what is checked here must be refused before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the weights were loaded before the bad input was refused")

    monkeypatch.setattr(pipeline, "load_model", refuse)


# ----------------------------------------------------------------------------- the built-in sample
def test_default_source_is_the_builtin_sample(no_data_folder):
    r = Recipe.from_dict({})
    assert r.calibration.source == DEFAULT_SOURCE == "builtin:wikitext2-valid"
    assert Recipe.from_dict({"calibration": {"task": "arc_easy"}}).calibration.source is None, "a task is a source too"
    text = calib.prepare(r)
    assert text.source == DEFAULT_SOURCE and text.license == "CC BY-SA 3.0" and "WikiText-2" in text.attribution
    assert 300 <= len(text.texts) <= 1000, "a few hundred paragraphs"
    assert all(len(t.split()) >= text_files.MIN_WORDS for t in text.texts)
    assert len(text.texts) >= r.calibration.samples + r.calibration.holdout, "enough for the default recipe"


def test_builtin_files_ship_with_their_license():
    for text in BUILTIN.values():
        data, notice = PACKAGE_DATA / text.file, (PACKAGE_DATA / text.license_file).read_text()
        assert data.is_file() and data.stat().st_size < 300_000, "compact"
        assert text.license in notice and "Merity" in notice and "ShareAlike" in notice
    with pytest.raises(UserError, match="unknown built-in calibration text 'builtin:nope'; known: builtin:wikitext2-valid"):
        calib.prepare(recipe(source="builtin:nope"))


def test_builtin_sample_is_an_excerpt_of_wikitext2_valid():
    """Whole articles copied line for line, a fraction of the split (never the full file)."""
    full = (data_files("wikitext2/valid.txt") / "wikitext2" / "valid.txt").read_text(encoding="utf-8")
    sample = gzip.decompress((PACKAGE_DATA / BUILTIN["wikitext2-valid"].file).read_bytes()).decode()
    lines = set(full.split("\n"))
    assert all(line in lines for line in sample.split("\n"))
    assert len(sample) < 0.35 * len(full)
    assert sample.count("\n = ") < full.count("\n = ")


def test_provenance_records_source_license_and_attribution(tiny_dir, tmp_path, no_data_folder):
    out = tmp_path / "pruned"
    r = run("prune", tiny_dir("llama"), "--out", out, "--ratio", "0.25", *SMALL)
    assert r.exit_code == 0, r.output
    cal = json.loads((out / "fbn_prune.json").read_text())["calibration"]
    assert cal["source"] == "builtin:wikitext2-valid"
    assert cal["license"] == "CC BY-SA 3.0" and "Wikipedia" in cal["attribution"]


# ----------------------------------------------------------------------------- files
def test_gzip_text_and_jsonl(tmp_path):
    texts = sample_texts(12, seed=3)
    txt = tmp_path / "c.txt.gz"
    txt.write_bytes(gzip.compress("\n\n".join(texts).encode()))
    jsonl = tmp_path / "c.jsonl.gz"
    jsonl.write_bytes(gzip.compress("\n".join(json.dumps({"body": t}) for t in texts).encode()))
    assert calib.prepare(recipe(source=str(txt))).texts == texts
    assert calib.prepare(recipe(source=str(jsonl), field="body")).texts == texts
    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="is not a valid gzip file"):
        calib.prepare(recipe(source=str(broken)))


@pytest.mark.parametrize("kind", ["directory", "device", "fifo", "binary", "latin1", "huge", "missing"])
def test_a_bad_calibration_file_is_named_for_what_it_is(tiny_dir, tmp_path, weights_never_load, kind):
    path = {"directory": tmp_path, "device": Path("/dev/zero"), "fifo": tmp_path / "pipe",
            "binary": tmp_path / "model.bin", "latin1": tmp_path / "latin1.txt", "huge": tmp_path / "huge.txt",
            "missing": tmp_path / "missing.txt"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "binary":
        path.write_bytes(bytes(range(256)) * 64)
    elif kind == "latin1":
        path.write_bytes("caf\xe9 au lait, un paragraphe assez long pour compter comme texte\n".encode("latin-1"))
    elif kind == "huge":
        with path.open("wb") as f:  # sparse: no disk used
            f.truncate(text_files.MAX_FILE_BYTES + 1)
    expected = {"directory": "is a directory, not a file", "device": "is a character device, not a regular file",
                "fifo": "is a named pipe (FIFO), not a regular file", "binary": "is binary, not text",
                "latin1": "is not UTF-8 text", "huge": "calibration reads at most 512 MiB of text",
                "missing": "does not exist"}[kind]
    r = bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", "--calib", path], expected)
    assert len(r.output.strip().splitlines()) == 1
    if kind != "missing":
        assert "does not exist" not in r.output


def test_missing_calibration_is_refused_before_the_weights_load(tiny_dir, tmp_path, weights_never_load):
    """Structural: the weight loader fails the test if called, so exit 2 proves nothing was loaded."""
    for command in ("prune", "networks"):
        bad([command, tiny_dir("llama"), "--out", tmp_path / command, "--calib", tmp_path / "nope.txt"],
            f"calibration file {tmp_path / 'nope.txt'} does not exist")
    assert not (tmp_path / "prune").exists() and not (tmp_path / "networks").exists()


def test_other_checks_run_before_the_weights_load(tiny_dir, tmp_path, weights_never_load, no_data_folder):
    model, out = tiny_dir("llama"), tmp_path / "o"
    bad(["prune", model, "--out", out, "--calib", "hf:only-a-name"], "give hf:DATASET[:CONFIG]:SPLIT[:FIELD]")
    bad(["prune", model, "--out", out, "--calib", "data:wikitext2/valid.txt"],
        "data:wikitext2/valid.txt is not in fbn_prune's own data and no data folder was given; set --data-dir or FBN_PRUNE_DATA")
    bad(["prune", model, "--out", out, "--data-dir", tmp_path / "nowhere"], "is not a folder")
    bad(["prune", model, "--out", out, "--device", "gpu"], "device (--device) must be auto, cpu, mps, cuda or cuda:N")
    bad(["prune", model, "--out", out, "--eval-tasks", "ppl:" + str(tmp_path / "none.txt")], "none.txt")


def test_task_names_are_checked_before_the_weights_load(tiny_dir, tmp_path, weights_never_load):
    """--calib-task and --eval-tasks are checked against lm-eval's task index (seconds), not after the prune."""
    model, out = tiny_dir("llama"), tmp_path / "o"
    bad(["prune", model, "--out", out, "--calib-task", "arc_eazy"], "unknown task 'arc_eazy'")
    bad(["prune", model, "--out", out, "--eval-tasks", "piqa_typo"], "unknown task 'piqa_typo'")


# ----------------------------------------------------------------------------- data: names
def test_data_names_resolve_in_the_package_first_then_the_data_folder(tmp_path, monkeypatch, no_data_folder):
    own = calib.prepare(recipe(source="data:wikitext2-valid-sample.txt.gz"))
    assert own.texts == calib.prepare(recipe(source=DEFAULT_SOURCE)).texts, "the package's own data, no folder needed"
    with pytest.raises(UserError, match="set --data-dir or FBN_PRUNE_DATA"):
        calib.prepare(recipe(source="data:mine/calib.txt"))
    folder = tmp_path / "data"
    (folder / "mine").mkdir(parents=True)
    (folder / "mine" / "calib.txt").write_text("\n\n".join(sample_texts(10, seed=5)))
    monkeypatch.setenv(datadir.DATA_ENV, str(folder))
    assert calib.prepare(recipe(source="data:mine/calib.txt")).texts == sample_texts(10, seed=5)
    assert calib.prepare(recipe(source="data:mine/calib.txt")).source == "data:mine/calib.txt"
    with pytest.raises(UserError, match="give a file inside the data folder"):
        calib.prepare(recipe(source="data:../etc/passwd"))


def test_nothing_points_at_a_development_folder():
    """No default of the tool, in code or help, names ../shared/data."""
    for path in (REPO / "fbn_prune").rglob("*"):
        if path.suffix in (".py", ".yaml", ".md"):
            assert "shared/data" not in path.read_text(), path
    r = run("prune", "--help")
    assert "shared" not in r.output and "$FBN_PRUNE_DATA" in r.output


# ----------------------------------------------------------------------------- hf: datasets
@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory) -> Path:
    """A dataset folder in the layout `datasets` reads as it is: one JSON-lines file per split."""
    root = tmp_path_factory.mktemp("hf") / "calib-set"
    root.mkdir()
    for split, seed in (("train", 7), ("validation", 8)):
        rows = [{"content": t, "n": i} for i, t in enumerate(sample_texts(30, seed=seed))]
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


def test_hf_spec_syntax():
    p = text_hub.parse_hf
    assert p("hf:org/name:train") == text_hub.HubDataset("org/name", None, "train", "text")
    assert p("hf:org/name:cfg:validation") == text_hub.HubDataset("org/name", "cfg", "validation", "text")
    assert p("hf:org/name::train[:2000]:content") == text_hub.HubDataset("org/name", None, "train[:2000]", "content")
    assert p("hf:org/name:cfg:train[10%:20%]", field="body").field == "body"
    for wrong in ("hf:", "hf:name", "hf::train", "hf:a:b:c:d:e", "hf:a:cfg::text"):
        with pytest.raises(UserError, match=r"give hf:DATASET\[:CONFIG\]:SPLIT\[:FIELD\]"):
            p(wrong)


def test_hf_local_dataset_folder(local_dataset):
    text = calib.prepare(recipe(source=f"hf:{local_dataset}::validation:content"))
    assert text.texts == sample_texts(30, seed=8) and text.source == f"hf:{local_dataset}::validation:content"
    assert calib.prepare(recipe(source=f"hf:{local_dataset}::train[:5]", field="content")).texts == sample_texts(30, seed=7)[:5]
    with pytest.raises(UserError, match=r"has no 'text' column; its columns: content, n"):
        calib.prepare(recipe(source=f"hf:{local_dataset}:train"))
    with pytest.raises(UserError, match=r"cannot load dataset .*Unknown split \"test\""):
        calib.prepare(recipe(source=f"hf:{local_dataset}::test:content"))
    with pytest.raises(UserError, match=r"BuilderConfig 'validation' not found.*; to name a field without a config: "
                                        r"hf:DATASET::SPLIT:FIELD"):
        calib.prepare(recipe(source=f"hf:{local_dataset}:validation:content"))


def _offline_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "FBN_PRUNE_DATA"))}
    return {**env, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fbn_prune", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_hf_dataset_from_the_cache_offline_and_refused_when_not_cached(local_dataset, tiny_dir, tmp_path):
    """`datasets` offline reads a Hub dataset from its cache: put acme/calib there as `datasets` itself
    writes it (load the folder once, store the prepared split under the Hub name), then plan a run on it
    in a fresh process with the network off. A dataset not in the cache is one line and exit 2."""
    import datasets

    home = tmp_path / "hf_home"
    ds = datasets.load_dataset(str(local_dataset), split="validation", cache_dir=str(home / "datasets"))
    prepared = Path(ds.cache_files[0]["filename"]).parent
    cached = home / "datasets" / "acme___calib" / "default" / "0.0.0" / prepared.name
    cached.mkdir(parents=True)
    for f in prepared.iterdir():
        (cached / f.name.replace(f"{local_dataset.name}-", "calib-")).write_bytes(f.read_bytes())
    del ds

    env = _offline_env(home)
    model = tiny_dir("llama")
    r = _cli(["networks", str(model), "--out", str(tmp_path / "net"), "--calib", "hf:acme/calib::validation:content",
              *SMALL, "--dry-run"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "hf:acme/calib::validation:content" in r.stdout and "24 documents" in r.stdout

    r = _cli(["prune", str(model), "--out", str(tmp_path / "o"), "--calib", "hf:acme/not-cached:train"], env, tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == ("error: hf:acme/not-cached::train:text: dataset acme/not-cached is not in the datasets "
                                "cache and offline mode is on (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE); load it once "
                                "with network access.")
