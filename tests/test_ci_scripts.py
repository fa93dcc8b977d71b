"""CI's own scripts: the Dockerfile replay (scripts/dockerfile_replay.py) and the checkpoint check."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def load(name):
    sys.path.insert(0, str(SCRIPTS))  # dockerfile_replay imports check_checkpoint from beside it
    try:
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


replay_mod = load("dockerfile_replay")
check_mod = load("check_checkpoint")


def test_the_project_dockerfile_declares_the_image_ci_expects(tmp_path):
    image = replay_mod.replay(tmp_path, {}, execute=False)
    assert image.from_image.startswith("python:3.") and image.from_image.endswith("-slim")
    assert image.user == "1000:1000" and image.entrypoint == ["fbn-prune"]
    assert "/out" in image.volumes and image.env["HF_HOME"] in image.volumes
    assert image.workdir == "/out" and image.env["HOME"] == "/home/fbn"
    assert "FBN_PRUNE_DATA" not in image.env  # the default job needs no data folder
    assert image.variant_steps and image.pip_steps >= 2
    assert image.env["PATH"].split(":")[0] == image.env["VENV"] + "/bin"


def write_context(folder, dockerfile, files=()):
    folder.mkdir()
    (folder / "Dockerfile").write_text(dockerfile)
    for name in files:
        (folder / name).write_text(f"{name}\n")
    return folder


def test_replay_runs_steps_under_the_image_root_and_skips_marked_ones(tmp_path):
    context = write_context(tmp_path / "ctx", """FROM python:3.11-slim
ARG GREETING=hello
ENV APP=/opt/app
WORKDIR ${APP}
COPY a.txt ./
RUN cp a.txt b.txt && echo "$GREETING $APP" > seen.txt
# docker-check: skip (would change the system)
RUN exit 1
USER 1000
ENTRYPOINT ["true"]
""", files=["a.txt"])
    image = replay_mod.replay(tmp_path / "work", {"GREETING": "hi"}, execute=True, context=context)
    app = tmp_path / "work" / "root" / "opt" / "app"
    assert (app / "b.txt").read_text() == "a.txt\n"
    assert (app / "seen.txt").read_text() == f"hi {app}\n"  # the build ARG override, the path rebased
    assert image.workdir == "/opt/app" and image.user == "1000"


@pytest.mark.parametrize("dockerfile, message", [
    ("FROM python:3.11-slim\nRUN pip install --no-cache-dir torch\n", "without -c constraints.txt"),
    ("FROM python:3.11-slim\nCOPY missing.txt ./\n", "no such file"),
    ("FROM python:3.11-slim\nCOPY secret.txt ./\n", "excluded by .dockerignore"),
    ("FROM python:3.11-slim\nRUN exit 3\n", "exited 3"),
    ("FROM python:3.11-slim\nONBUILD RUN true\n", "not replayed"),
    ("FROM python:3.11-slim\nENTRYPOINT fbn-prune\n", r"exec \(JSON\) form"),
])
def test_replay_refuses_what_it_cannot_vouch_for(tmp_path, dockerfile, message):
    context = write_context(tmp_path / "ctx", dockerfile, files=["secret.txt"])
    (context / ".dockerignore").write_text("*\n!Dockerfile\n!missing.txt\n")
    with pytest.raises(replay_mod.ReplayError, match=message):
        replay_mod.replay(tmp_path / "work", {}, execute=True, context=context)


def test_checkpoint_check_needs_a_passed_verification_and_weights(tmp_path):
    with pytest.raises(check_mod.NotVerified, match="missing"):
        check_mod.verified_checkpoint(tmp_path)
    info = {"verified": True, "verification": {"ok": True, "relative_diff": 1e-7, "top1_agreement": 1.0}}
    (tmp_path / "fbn_prune.json").write_text(json.dumps(info))
    with pytest.raises(check_mod.NotVerified, match="no \\*.safetensors"):
        check_mod.verified_checkpoint(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert "verified checkpoint (model.safetensors" in check_mod.verified_checkpoint(tmp_path)
    (tmp_path / "fbn_prune.json").write_text(json.dumps({**info, "verification": {"ok": False}, "verified": False}))
    with pytest.raises(check_mod.NotVerified, match="did not pass"):
        check_mod.verified_checkpoint(tmp_path)
    assert check_mod.main([str(tmp_path)]) == 1


def test_ci_lints_imports_with_the_pinned_import_linter():
    """.ci/run's ruff step runs lint-imports after ruff; constraints.txt pins import-linter (the dev extra)."""
    root = SCRIPTS.parent
    ci = (root / ".ci" / "run").read_text()
    body = ci[ci.index("do_ruff() {"):]
    body = body[:body.index("\n}\n")]
    assert ".venv/bin/ruff check" in body and ".venv/bin/lint-imports" in body
    assert body.index("ruff check") < body.index("lint-imports")
    pins = dict(line.split("==") for line in (root / "constraints.txt").read_text().splitlines() if "==" in line)
    assert pins["import-linter"] == "2.17"
    assert "import-linter" in (root / "pyproject.toml").read_text().split("dev = [")[1].split("]")[0]
