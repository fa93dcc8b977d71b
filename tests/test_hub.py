"""`fbn-prune push` and the model card: the dry-run listing, the refusals, the token, the card's Hub
metadata, and the upload itself against a local fake of the Hub's HTTP API on 127.0.0.1
(huggingface_hub takes any endpoint: ``HF_ENDPOINT`` / ``HfApi(endpoint=...)``), so no test
touches the network."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from fbn_prune.ship import card as cards
from fbn_prune import pipeline
from fbn_prune.export.provenance import Provenance
from fbn_prune.ship import hub
from fbn_prune.ship.files import PushRefused
from fbn_prune.ship.push_plan import plan_push
from fbn_prune.ship.upload import push
from fbn_prune.config.gate import Gate
from fbn_prune.evaluate import report
from fbn_prune.evaluate.record import EvalRecord, PairComparison
from fbn_prune.cli.main import cli
from fbn_prune.config.recipe import Recipe

SECRET = "hf_fbnTestTokenDoNotLeak0123456789abcdef"
SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_dir, calib_txt) -> Path:
    """One verified checkpoint of the tiny Llama (magnitude scores: no ICA, seconds)."""
    out = tmp_path_factory.mktemp("hub") / "tiny-pruned"
    recipe = Recipe.from_dict({
        "model": str(tiny_dir("llama")), "out": str(out), "device": "cpu",
        "calibration": {"source": str(calib_txt), "samples": 16, "seq_len": 64, "batch_size": 8, "holdout": 2},
        "decomposition": {"runs": 2, "components": 8, "max_iter": 50},
        "selection": {"method": "magnitude", "ratio": 0.25},
    })
    return pipeline.prune(recipe, progress=False)


@pytest.fixture
def ckpt(built, tmp_path) -> Path:
    """A fresh copy of the checkpoint for a test to change."""
    return Path(shutil.copytree(built, tmp_path / "ckpt"))


@pytest.fixture
def no_token(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


def run(*args, env=None):
    result = CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)
    return result.exit_code, result.output


def edit_info(folder: Path, **changes) -> dict:
    path = folder / "fbn_prune.json"
    info = json.loads(path.read_text())
    info.update(changes)
    path.write_text(json.dumps(info, indent=1))
    return info


def lm_results(acc: float, acc_norm: float, word_ppl: float) -> dict:
    """lm-eval-shaped results of one multiple-choice task and one perplexity task."""
    return {
        "results": {"arc_easy": {"alias": "arc_easy", "acc,none": acc, "acc_stderr,none": 0.01,
                                 "acc_norm,none": acc_norm, "acc_norm_stderr,none": 0.01},
                    "wikitext": {"alias": "wikitext", "word_perplexity,none": word_ppl, "byte_perplexity,none": 1.5,
                                 "bits_per_byte,none": 0.58}},
        "higher_is_better": {"arc_easy": {"acc": True, "acc_norm": True},
                             "wikitext": {"word_perplexity": False, "byte_perplexity": False, "bits_per_byte": False}},
        "n-samples": {"arc_easy": {"original": 2376, "effective": 200}, "wikitext": {"original": 62, "effective": 3}},
        "n-shot": {"arc_easy": 0, "wikitext": 0},
        "configs": {"arc_easy": {"test_split": "test"}, "wikitext": {"test_split": "test"}},
    }


def evaluated(folder: Path, pruned_acc: float) -> EvalRecord:
    """Write an evaluation (original acc 0.60) into the checkpoint as `fbn-prune eval` does, gate --max-drop 2."""
    comparison = PairComparison(
        base={"spec": SMOL, "name": SMOL, "parameters": 134_515_008, "cached_tasks": []},
        pruned={"path": str(folder), "name": folder.name, "layout": "uniform", "parameters": 117_926_208,
                "method": "fbn", "achieved_ratio": 0.208},
        settings={"tasks": ["arc_easy", "wikitext"], "limit": "200,wikitext=3", "task_limits": {"wikitext": 3},
                  "documents": {"arc_easy": 200, "wikitext": 3}, "num_fewshot": None, "batch_size": 8,
                  "max_length": 2048, "dtype": "float32", "device": "cpu"},
        versions={"lm_eval": "0.4.13"},
        tasks={"arc_easy": {"tasks": ["arc_easy"], "source": None}, "wikitext": {"tasks": ["wikitext"], "source": None}},
        original=lm_results(0.60, 0.58, 20.0),
        pruned_results=lm_results(pruned_acc, pruned_acc - 0.02, 21.0),
        timings={"total_s": 1.0},
    )
    record = report.build(comparison, Gate.make(2.0, None))
    report.write(record, folder)
    report.update_checkpoint(folder, record, folder)
    return record


# ----------------------------------------------------------------------------- the fake Hub
class FakeHub:
    """The part of the Hub's HTTP API that create_repo, create_branch, create_commit (preupload, commit,
    tree listing for deletions) and model_info use; every file is accepted as a regular (non-LFS) blob."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, dict] = {}  # repo_id -> {"private": bool, "branches": {name: {path: bytes}}}
        self.log: list[tuple[str, str, bool]] = []  # (method, path, authorised)
        self.bodies: list[bytes] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        hub_ = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        if size == 0:
                            self.rfile.readline()
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _send(self, status: int, payload) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def _route(self, method: str) -> None:
                body = self._body() if method == "POST" else b""
                hub_.bodies.append(body)
                path = self.path.split("?", 1)[0]
                ok = self.headers.get("authorization") == f"Bearer {hub_.token}"
                hub_.log.append((method, path, ok))
                if not ok:
                    return self._send(401, {"error": "Invalid credentials in Authorization header"})
                try:
                    status, payload = hub_.handle(method, path, body)
                except Exception as e:  # a bug in the fake shows up in the test, not as a hang
                    status, payload = 500, {"error": f"fake hub: {type(e).__name__}: {e}"}
                self._send(status, payload)

        return Handler

    def handle(self, method: str, path: str, body: bytes):
        if method == "POST" and path == "/api/repos/create":
            req = json.loads(body)
            repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
            self.repos[repo_id] = {"private": req.get("visibility") == "private", "branches": {"main": {}}}
            return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}
        if method == "POST" and path == "/api/validate-yaml":
            errors, warnings = cards.validate_card(json.loads(body)["content"])
            return (400 if errors else 200), {"errors": [{"message": e} for e in errors],
                                              "warnings": [{"message": w} for w in warnings]}
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/(preupload|commit|branch|tree|revision)/([^/]+)(/.*)?)?", path)
        if not m or m.group(1) not in self.repos:
            return 404, {"error": "Repository not found"}
        repo_id, action, rev = m.group(1), m.group(2), m.group(3)
        repo = self.repos[repo_id]
        if action is None or action == "revision":
            return 200, {"id": repo_id, "sha": "0" * 40, "private": repo["private"], "siblings": []}
        if action == "branch":
            if rev in repo["branches"]:
                return 409, {"error": "Branch already exists"}
            repo["branches"][rev] = dict(repo["branches"]["main"])
            return 200, {}
        if rev not in repo["branches"]:
            return 404, {"error": f"Revision {rev} not found"}
        files = repo["branches"][rev]
        if action == "tree":
            return 200, [{"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                         for p, b in sorted(files.items())]
        if action == "preupload":
            req = json.loads(body)
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                                   for f in req["files"]]}
        if action == "commit":
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] == "deletedFile":
                    files.pop(item["value"]["path"], None)
                elif item["key"] == "lfsFile":
                    return 400, {"error": "the fake hub takes regular files only"}
            oid = hashlib.sha1(body).hexdigest()
            return 200, {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}
        return 404, {"error": "unknown route"}


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """A fake Hub on 127.0.0.1 that accepts SECRET; the session's offline switch is lifted for it only."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with FakeHub(SECRET) as fh:
        monkeypatch.setenv("HF_ENDPOINT", fh.url)
        yield fh


def dry_run_listing(output: str) -> list[str]:
    """The file names under "upload" in a push listing."""
    names, inside = [], False
    for line in output.splitlines():
        if line.startswith("  upload "):
            inside = True
            continue
        if inside and line.startswith("    "):
            names.append(line.split()[0])
        elif inside:
            break
    return names


def all_text_under(*roots: Path) -> str:
    chunks = []
    for root in roots:
        for f in Path(root).rglob("*"):
            if f.is_file() and not f.is_symlink():
                chunks.append(f.read_bytes().decode("latin-1"))
    return "\n".join(chunks)


# ----------------------------------------------------------------------------- dry run and refusals
def test_dry_run_lists_exactly_the_checkpoint_files(ckpt, no_token):
    (ckpt / "optimizer.pt").write_bytes(b"pickle")
    (ckpt / "pytorch_model.bin").write_bytes(b"pickle")
    (ckpt / ".DS_Store").write_bytes(b"x")
    (ckpt / "notes.txt").write_text("mine")
    (ckpt / "networks").mkdir()
    before = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()}
    code, out = run("push", ckpt, "--repo-id", "my-org/tiny-fbn", "--dry-run")
    assert code == 0, out
    listed = dry_run_listing(out)
    expected = sorted(p.name for p in ckpt.iterdir()
                      if p.is_file() and p.suffix in (".json", ".safetensors", ".yaml", ".md"))
    assert listed == expected
    assert "model.safetensors" in listed and "README.md" in listed and "fbn_prune.json" in listed
    for name in ("optimizer.pt", "pytorch_model.bin", ".DS_Store", "notes.txt", "networks"):
        assert name not in listed and re.search(rf"^    {re.escape(name)}  \(", out, re.M), name
    assert "load snippet names my-org/tiny-fbn" in out
    assert "dry run: nothing was uploaded." in out and "token: none found" in out
    assert {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file()} == before, "a dry run changes nothing"


@pytest.mark.parametrize("case, code, text", [
    ("no-provenance", 2, "has no fbn_prune.json"),
    ("unverified", 4, "verification against the original model failed"),
    ("gate-failed", 3, "evaluation gate failed"),
    ("bad-card", 2, "model card's metadata is invalid"),
])
def test_refuses_unless_forced(ckpt, no_token, case, code, text):
    if case == "no-provenance":
        (ckpt / "fbn_prune.json").unlink()
    elif case == "unverified":
        edit_info(ckpt, verified=False)
    elif case == "gate-failed":
        evaluated(ckpt, pruned_acc=0.55)  # 5 points below the original 0.60, gate 2
    elif case == "bad-card":
        text_ = (ckpt / "README.md").read_text()
        (ckpt / "README.md").write_text(text_.replace("tags:", "base_model: ./some/local/path\ntags:", 1))
    got, out = run("push", ckpt, "--repo-id", "my-org/tiny-fbn", "--dry-run")
    assert got == code, out
    assert text in out and "--force" in out and "nothing was uploaded" not in out
    assert dry_run_listing(out), "the listing is printed before the refusal"
    got, out = run("push", ckpt, "--repo-id", "my-org/tiny-fbn", "--dry-run", "--force")
    assert got == 0, out
    assert "FORCED" in out and text in out and "dry run: nothing was uploaded." in out


def test_gate_passed_and_require_eval(ckpt, no_token):
    code, out = run("push", ckpt, "--repo-id", "o/n", "--dry-run", "--require-eval")
    assert code == 3 and "no evaluation is recorded" in out
    evaluated(ckpt, pruned_acc=0.595)  # half a point below: the gate holds
    code, out = run("push", ckpt, "--repo-id", "o/n", "--dry-run", "--require-eval")
    assert code == 0, out
    assert "evaluation gate passed" in out
    assert {"eval.json", "eval.md"} <= set(dry_run_listing(out))


def test_refuses_bad_input_even_when_forced(ckpt, tmp_path, no_token):
    code, out = run("push", ckpt, "--repo-id", "no-slash", "--dry-run", "--force")
    assert code == 2 and "ORG/NAME" in out
    code, out = run("push", ckpt, "--repo-id", "org/bad..name", "--dry-run", "--force")
    assert code == 2 and "not a valid Hub repository id" in out
    code, out = run("push", tmp_path / "missing", "--repo-id", "o/n", "--dry-run")
    assert code == 2 and "is not a folder" in out
    for f in ckpt.glob("*.safetensors"):
        f.unlink()
    code, out = run("push", ckpt, "--repo-id", "o/n", "--dry-run", "--force")
    assert code == 2 and "no *.safetensors weights" in out


def test_push_without_token_or_offline(ckpt, no_token, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    code, out = run("push", ckpt, "--repo-id", "o/n")  # the session is offline
    assert code == 2 and "HF_HUB_OFFLINE" in out
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    code, out = run("push", ckpt, "--repo-id", "o/n")
    assert code == 2 and "no Hugging Face token" in out and "HF_TOKEN" in out


# ----------------------------------------------------------------------------- upload (fake Hub)
NO_LICENSE = "ignore:Warnings while validating metadata in README.md"  # the tiny base model has no licence


@pytest.mark.filterwarnings(NO_LICENSE)
def test_push_uploads_the_listed_files_and_never_leaks_the_token(ckpt, fake_hub, monkeypatch, caplog, tmp_path):
    import os

    evaluated(ckpt, pruned_acc=0.595)
    (ckpt / "pytorch_model.bin").write_bytes(b"pickle")
    monkeypatch.setenv("HF_TOKEN", SECRET)
    code, dry = run("push", ckpt, "--repo-id", "my-org/tiny-fbn", "--dry-run", "--private", "--revision", "v1")
    assert code == 0, dry
    assert "token: from HF_TOKEN" in dry and fake_hub.log == [], "a dry run makes no request"
    caplog.set_level(logging.DEBUG)
    code, out = run("-vv", "push", ckpt, "--repo-id", "my-org/tiny-fbn", "--private", "--revision", "v1")
    assert code == 0, out
    assert f"pushed: {fake_hub.url}/my-org/tiny-fbn/commit/" in out

    repo = fake_hub.repos["my-org/tiny-fbn"]
    assert repo["private"] is True
    uploaded = repo["branches"]["v1"]
    assert sorted(uploaded) == dry_run_listing(dry) == dry_run_listing(out)
    assert repo["branches"]["main"] == {}, "--revision pushes to its branch only"
    for name, data in uploaded.items():
        if name != "README.md":
            assert data == (ckpt / name).read_bytes(), name
    assert all(ok for _, _, ok in fake_hub.log), "every request carried the token"

    # the uploaded card: load snippet with the repo id, Hub metadata with the eval results
    text = uploaded["README.md"].decode()
    assert 'from_pretrained("my-org/tiny-fbn")' in text and cards.PLACEHOLDER_REPO not in text
    assert cards.validate_card(text)[0] == []
    from huggingface_hub import ModelCard

    assert {e.metric_type for e in ModelCard(text).data.eval_results} == {"acc", "acc_norm", "word_perplexity",
                                                                         "byte_perplexity", "bits_per_byte"}
    assert f'from_pretrained("{cards.PLACEHOLDER_REPO}")' in (ckpt / "README.md").read_text(), "the local card stays"

    # the token: not in the output, the logs, any file written here or in the Hugging Face home
    assert SECRET not in out and SECRET not in dry and SECRET not in caplog.text
    assert SECRET not in all_text_under(tmp_path, Path(os.environ["HF_HOME"]))
    assert all(SECRET.encode() not in b for b in fake_hub.bodies), "the token is sent as a header only"

    # a second push replaces the checkpoint: a stale shard of the first is deleted
    uploaded["model-00009-of-00009.safetensors"] = b"stale"
    code, out = run("push", ckpt, "--repo-id", "my-org/tiny-fbn", "--revision", "v1")
    assert code == 0, out
    assert sorted(repo["branches"]["v1"]) == dry_run_listing(dry)


def test_push_reports_a_rejected_token(ckpt, fake_hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrongTokenAlsoSecret")
    code, out = run("push", ckpt, "--repo-id", "my-org/tiny-fbn")
    assert code == 5, out
    assert "401" in out and "hf_wrongTokenAlsoSecret" not in out
    assert fake_hub.repos == {}


@pytest.mark.filterwarnings(NO_LICENSE)
def test_push_library_call(ckpt, fake_hub):
    """plan_push + push with an explicit token and endpoint (what the CLI wraps)."""
    p = plan_push(ckpt, "someone/tiny")
    info = push(p, token=SECRET, endpoint=fake_hub.url)
    assert info.commit_url.startswith(f"{fake_hub.url}/someone/tiny/commit/")
    assert sorted(fake_hub.repos["someone/tiny"]["branches"]["main"]) == p.names
    assert fake_hub.repos["someone/tiny"]["private"] is False


# ----------------------------------------------------------------------------- the model card
def test_card_metadata_parses_and_validates(ckpt):
    """The card written by prune + eval parses with huggingface_hub and carries the Hub metadata."""
    from huggingface_hub import ModelCard, metadata_load
    from huggingface_hub.repocard_data import model_index_to_eval_results

    edit_info(ckpt, base_model_hub_id=SMOL, license=None)
    record = evaluated(ckpt, pruned_acc=0.595)
    path = ckpt / "README.md"
    meta = metadata_load(path)
    assert "model_index" not in meta and meta["model-index"][0]["name"] == ckpt.name
    assert meta["base_model"] == SMOL and meta["license"] == "apache-2.0"  # the base model's licence
    assert {"pruned", "fbn-prune"} <= set(meta["tags"]) and meta["pipeline_tag"] == "text-generation"
    assert meta["library_name"] == "transformers"
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == ckpt.name
    by_metric = {(r.dataset_type, r.metric_type): r for r in results}
    arc = by_metric["allenai/ai2_arc", "acc"]
    assert arc.metric_value == pytest.approx(0.595) and arc.dataset_name == "ARC-Easy"
    assert arc.dataset_config == "ARC-Easy" and arc.dataset_split == "test" and arc.task_type == "text-generation"
    assert "first 200 of 2376 documents" in arc.metric_name

    card = ModelCard.load(path)  # raises on metadata huggingface_hub cannot parse
    assert len(card.data.eval_results) == len(results) and card.data.model_name == ckpt.name
    errors, warnings = cards.validate_card(path.read_text())
    assert errors == [] and not [w for w in warnings if "license" in w]
    body = card.text
    for section in ("## How it was made", "## How to load", "## Per-layer FFN widths", "## Evaluation"):
        assert section in body, section
    assert "| method | `magnitude` |" in body and "recipe.yaml" in body
    assert "| arc_easy | acc ↑ |" in body and record.gate["passed"]
    info = json.loads((ckpt / "fbn_prune.json").read_text())
    for i, w in enumerate(info["widths"]):
        assert f"| {i} | {info['original_widths'][i]} | {w} |" in body


def test_card_loading_snippet_follows_the_layout(ckpt):
    info = json.loads((ckpt / "fbn_prune.json").read_text())
    for layout, remote in (("uniform", False), ("padded", False), ("exact", True)):
        text = cards.for_repo(cards.render_card(Provenance.from_dict({**info, "layout": layout})), "o/n")
        assert ('from_pretrained("o/n", trust_remote_code=True)' in text) == remote
        assert f"layout-{layout}" in text and cards.validate_card(text)[0] == []


def test_validate_catches_what_the_hub_rejects():
    good = "---\nlicense: apache-2.0\nbase_model: org/model\ntags: [pruned]\n---\n# x\n"
    assert cards.validate_card(good) == ([], [])
    assert cards.validate_card("# no metadata\n")[0]
    assert cards.validate_card("---\nmodel_index: []\nlicense: mit\n---\n")[0]
    assert cards.validate_card("---\nbase_model: /local/folder\nlicense: mit\n---\n")[0]
    assert cards.validate_card("---\nlicense: mit\nmodel-index:\n- name: x\n  results:\n  - task: {type: t}\n---\n")[0]
    assert cards.validate_card("---\nlicense: [unclosed\n---\n")[0]
    errors, warnings = cards.validate_card("---\ntags: [pruned]\n---\n")
    assert errors == [] and any("no license" in w for w in warnings)


def test_license_from_the_base_models_cached_card(monkeypatch, tmp_path):
    """The base model's own card in the Hugging Face cache wins over the table."""
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: llama3.1\n---\n# base\n")
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo_id, filename, **kw: str(card))
    assert hub.base_license("someone/base-model") == "llama3.1"
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda repo_id, filename, **kw: None)
    assert hub.base_license("someone/base-model") is None
    assert hub.base_license(SMOL) == "apache-2.0"


def test_missing_card_is_made_from_the_provenance(ckpt):
    (ckpt / "README.md").unlink()
    p = plan_push(ckpt, "o/n")
    assert "README.md" in p.names and any("generated" in c for c in p.card_changes)
    assert 'from_pretrained("o/n")' in p.card and cards.validate_card(p.card)[0] == []
    assert not (ckpt / "README.md").exists(), "planning writes nothing"


# ----------------------------------------------------------------------------- only regular files inside the folder
SECRET_TEXT = "TOP SECRET: not part of the checkpoint\n"


def _link(name, target):
    def make(folder: Path, secret: Path) -> None:
        (folder / name).unlink(missing_ok=True)
        (folder / name).symlink_to(target(folder, secret) if callable(target) else target)
    return make


def _fifo(name):
    def make(folder: Path, secret: Path) -> None:
        import os

        (folder / name).unlink(missing_ok=True)
        os.mkfifo(folder / name)
    return make


def _socket(name):
    def make(folder: Path, secret: Path) -> None:
        import socket

        (folder / name).unlink(missing_ok=True)
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(folder / name))
        s.close()
    return make


def _hard_link(folder: Path, secret: Path) -> None:
    import os

    (folder / "tokenizer.json").unlink()
    os.link(secret, folder / "tokenizer.json")


def _chain(folder: Path, secret: Path) -> None:
    (folder / "hop").symlink_to(secret)
    _link("config.json", "hop")(folder, secret)


OUTSIDE = {
    "card linked outside": (_link("README.md", lambda f, s: s), "README.md is a link to"),
    "provenance linked outside": (_link("fbn_prune.json", lambda f, s: s), "fbn_prune.json is a link to"),
    "eval report linked to /etc/passwd": (_link("eval.md", "/etc/passwd"), "eval.md is a link to /etc/passwd"),
    "relative link up and out": (_link("vocab.json", "../secret.txt"), "vocab.json is a link to"),
    "link through a link inside": (_chain, "config.json is a link to"),
    "link to a folder outside": (_link("tokenizer.json", lambda f, s: s.parent), "tokenizer.json is a link to"),
    "link to a device": (_link("merges.txt", "/dev/zero"), "merges.txt is a link to /dev/zero"),
    "hard link": (_hard_link, "tokenizer.json is a hard link"),
    "fifo": (_fifo("config.json"), "config.json is a fifo"),
    "fifo as the card": (_fifo("README.md"), "README.md is a fifo"),
    "socket": (_socket("added_tokens.json"), "added_tokens.json is a socket"),
}


@pytest.mark.parametrize("case", list(OUTSIDE))
def test_push_refuses_anything_but_regular_files_inside_the_folder(ckpt, tmp_path, no_token, case):
    make, fragment = OUTSIDE[case]
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_TEXT)
    make(ckpt, secret)
    for force in ([], ["--force"]):
        code, out = run("push", ckpt, "--repo-id", "o/n", "--dry-run", *force)
        assert code == 2, out
        assert fragment in out and "Only regular files inside the folder" in out and "--force does not" in out
        assert "TOP SECRET" not in out and "root:" not in out
        assert "dry run: nothing was uploaded" not in out


@pytest.mark.filterwarnings(NO_LICENSE)
@pytest.mark.parametrize("case", ["eval report linked to /etc/passwd", "card linked outside", "hard link", "fifo"])
def test_push_sends_nothing_from_outside(ckpt, tmp_path, fake_hub, monkeypatch, case):
    make, fragment = OUTSIDE[case]
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_TEXT)
    make(ckpt, secret)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    code, out = run("push", ckpt, "--repo-id", "my-org/tiny-fbn", "--force")
    assert code == 2 and fragment in out, out
    assert fake_hub.log == [] and fake_hub.repos == {}, "refused before any request"


@pytest.mark.filterwarnings(NO_LICENSE)
def test_push_follows_a_link_inside_the_folder(ckpt, fake_hub, monkeypatch):
    data = (ckpt / "recipe.yaml").read_bytes()
    (ckpt / "recipe.yaml").rename(ckpt / "recipe-real.yaml")
    (ckpt / "recipe.yaml").symlink_to("recipe-real.yaml")
    monkeypatch.setenv("HF_TOKEN", SECRET)
    code, dry = run("push", ckpt, "--repo-id", "my-org/tiny-fbn", "--dry-run")
    assert code == 0 and "recipe.yaml" in dry_run_listing(dry) and "recipe-real.yaml" not in dry_run_listing(dry)
    code, out = run("push", ckpt, "--repo-id", "my-org/tiny-fbn")
    assert code == 0, out
    uploaded = fake_hub.repos["my-org/tiny-fbn"]["branches"]["main"]
    assert uploaded["recipe.yaml"] == data and sorted(uploaded) == dry_run_listing(dry)


@pytest.mark.filterwarnings(NO_LICENSE)
@pytest.mark.parametrize("swap", ["link", "renamed over"])
def test_push_sends_the_checked_bytes_or_nothing(ckpt, tmp_path, fake_hub, swap):
    """A file swapped after the check (a link to a secret, another file renamed over it) is never sent."""
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_TEXT)
    p = plan_push(ckpt, "someone/tiny")
    (ckpt / "config.json").unlink()
    if swap == "link":
        (ckpt / "config.json").symlink_to(secret)
    else:
        (tmp_path / "other.json").write_text(SECRET_TEXT)
        (tmp_path / "other.json").rename(ckpt / "config.json")
    with pytest.raises(PushRefused, match="config.json .* (changed|was replaced) since it was checked"):
        push(p, token=SECRET, endpoint=fake_hub.url)
    assert fake_hub.log == [] and not any(b"TOP SECRET" in b for b in fake_hub.bodies)
