"""`fbn-prune tasks --render DIR`: a task folder that plain lm-eval loads with --include_path."""

from __future__ import annotations

from pathlib import Path

import pytest
from clitools import bad, run
from lm_eval.tasks import TaskManager

from conftest import SHARED_DATA as DATA

pytestmark = pytest.mark.skipif(DATA is None or not (DATA / "piqa" / "valid.jsonl").is_file(),
                                reason=f"evaluation data not in {DATA}")


def test_rendered_folder_loads_in_lm_eval_task_manager(tmp_path, monkeypatch):
    monkeypatch.setenv("FBN_PRUNE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "fbn-tasks"
    r = run("tasks", "--render", out, "--data-dir", DATA)
    assert r.exit_code == 0 and f"--include_path {out}" in r.output
    assert {p.name for p in out.glob("*.yaml")} == {"arc_easy.yaml", "lambada_openai.yaml", "piqa.yaml", "wikitext.yaml"}
    text = (out / "piqa.yaml").read_text()
    assert f'"{out}/data/piqa/validation.jsonl"' in text and "@RENDERED@" not in text
    assert not (tmp_path / "cache").exists()  # the user's folder, not the cache
    tm = TaskManager(include_path=str(out))
    for name in ("piqa", "arc_easy", "lambada_openai", "wikitext"):
        assert Path(tm.task_index[name].yaml_path).parent == out, name
    piqa = tm.load(["piqa"])["tasks"]["piqa"]
    docs = piqa.validation_docs()
    assert len(docs) == 1838 and set(docs[0]) >= {"goal", "sol1", "sol2", "label"}


def test_render_refuses_existing_folder_and_missing_data(tmp_path):
    out = tmp_path / "t"
    out.mkdir()
    bad(["tasks", "--render", out, "--data-dir", DATA], "already exists; pass --overwrite")
    assert run("tasks", "--render", out, "--data-dir", DATA, "--overwrite").exit_code == 0
    assert (out / "piqa.yaml").is_file()
    bad(["tasks", "--render", tmp_path / "u", "--data-dir", tmp_path / "nope"], "is not a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    bad(["tasks", "--render", tmp_path / "v", "--data-dir", empty], "no task data found")
    assert not (tmp_path / "v").exists()


def test_tasks_lists_availability(tmp_path):
    r = run("tasks", "--data-dir", DATA)
    assert r.exit_code == 0 and "piqa" in r.output and "ready" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "missing piqa/valid.jsonl" in run("tasks", "--data-dir", empty).output
