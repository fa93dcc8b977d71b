"""Push a verified checkpoint to the Hugging Face Hub (``fbn-prune push``).

Two steps, so that ``--dry-run`` shows exactly what a push would do:

* :func:`plan` reads the folder and decides, without network or token: which files go up (the
  checkpoint's own files, listed by name; pickles, hidden files, sub-folders and anything else
  are skipped with a reason), the model card that is uploaded as README.md (the folder's card,
  its load snippet naming the repository, the base model's licence filled in when it lacks one,
  its metadata validated locally), and whether the folder may be pushed at all. It refuses a
  folder that has no provenance file (``fbn_prune.json``, exit 2), whose verification failed
  (exit 4) or whose recorded evaluation gate failed (exit 3), unless ``force``; a folder with no
  safetensors weights is refused always.
* :func:`push` uploads that plan with huggingface_hub: ``HfApi.create_repo`` (``exist_ok``), a
  branch for ``revision`` when given, and one ``create_commit`` of ``CommitOperationAdd`` per planned
  file, each reading from a file descriptor opened on exactly the file the plan checked (same device
  and inode, still a regular file with one name), plus deletions of an earlier push's files matching
  :data:`REPLACED_PATTERNS` that this one does not upload again (stale weights go).

What is sent: only regular files that lie inside the folder. Every planned name is resolved (links
followed); a link whose target lies outside the folder, a hard link (a file with more than one
name, whose other name may be anywhere), a fifo, socket or device is refused: exit 2 naming it,
whatever ``--force`` says (replace it with a real copy, or remove it). A link inside the folder to a
regular file inside it is sent under the link's name. Names that are not part of a checkpoint are
skipped (listed with the reason), whatever they are.

The token comes from ``HF_TOKEN`` or the huggingface_hub login (:func:`huggingface_hub.get_token`).
It is passed to huggingface_hub only: never printed, logged (log records are redacted while a push
runs) or written anywhere. Hub errors become
:class:`UploadFailed` (exit 5) with the token scrubbed from their text.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from fbn_prune import __version__
from fbn_prune.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_VERIFY_FAILED, UserError

log = logging.getLogger(__name__)

EXIT_UPLOAD_FAILED = 5

# what a checkpoint folder holds, by file name (top level only)
CHECKPOINT_FILES = {
    "config.json": "model config",
    "generation_config.json": "generation config",
    "tokenizer.json": "tokenizer",
    "tokenizer_config.json": "tokenizer",
    "special_tokens_map.json": "tokenizer",
    "added_tokens.json": "tokenizer",
    "vocab.json": "tokenizer",
    "vocab.txt": "tokenizer",
    "merges.txt": "tokenizer",
    "tokenizer.model": "tokenizer",
    "spiece.model": "tokenizer",
    "chat_template.jinja": "chat template",
    "chat_template.json": "chat template",
    "modeling_fbn.py": "modeling code (exact layout)",
    "README.md": "model card",
    "recipe.yaml": "fbn_prune recipe as used",
    "fbn_prune.json": "provenance",
    "eval.json": "evaluation report",
    "eval.md": "evaluation report",
    "eval-docs.jsonl": "per-document evaluation results",
    "search.json": "ratio search history (fbn-prune search)",
    "search.png": "ratio search curve (fbn-prune search)",
}
CHECKPOINT_PATTERNS = {
    "*.safetensors": "weights",
    "*.safetensors.index.json": "weights index",
    "*.gguf": "GGUF for llama.cpp (fbn-prune prune --to-gguf)",
}
PICKLES = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.npy", "*.npz")
# files of an earlier push that this one replaces: deleted from the branch unless uploaded again, so a
# re-push with other shards or another layout leaves no stale weights or modeling code behind
REPLACED_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "modeling_fbn.py", "eval.json", "eval.md",
                     "eval-docs.jsonl", "search.json", "search.png"]
GLOB_CHARS = set("*?[]")
PROVENANCE = "fbn_prune.json"


class PushRefused(UserError):
    """The folder must not be pushed (without --force); exit code 2, 3 or 4 by the reason."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.exit_code = exit_code


class UploadFailed(UserError):
    """The Hub refused or could not be reached: exit code 5."""

    exit_code = EXIT_UPLOAD_FAILED


@dataclass(frozen=True)
class CheckedFile:
    """A file the plan will send: the regular file ``path`` (resolved, inside the folder) and its identity when
    checked (``device``, ``inode``, ``size``, modification and change times in ns: an inode number reused by a
    file renamed over it differs in its change time). The upload reads exactly that file or refuses."""

    name: str
    path: Path
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    def same(self, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) == (
            self.device, self.inode, self.size, self.mtime_ns, self.ctime_ns)


@dataclass
class Plan:
    """What ``fbn-prune push`` will do; :func:`describe` prints it."""

    folder: Path
    repo_id: str
    revision: str | None
    private: bool
    files: list[tuple[str, int, str]] = field(default_factory=list)  # (name, bytes, what)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    card: str | None = None  # README.md as it will be uploaded
    card_changes: list[str] = field(default_factory=list)
    problems: list[tuple[str, int]] = field(default_factory=list)  # (refusal reason, exit code)
    warnings: list[str] = field(default_factory=list)
    info: dict | None = None
    forced: bool = False
    sources: dict[str, CheckedFile] = field(default_factory=dict)  # name -> the file whose bytes are sent
    unsafe: list[tuple[str, str]] = field(default_factory=list)  # (name, why): refused even with --force

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.files]

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.files)

    def refusal(self) -> PushRefused | None:
        """The error to raise when the plan has problems (the most specific exit code wins); files that are not
        regular files inside the folder are refused whatever --force says."""
        if self.unsafe:
            what = "; ".join(f"{name} is {why}" for name, why in self.unsafe)
            return PushRefused(f"refusing to push {self.folder}: {what}. Only regular files inside the folder are "
                               "uploaded: replace each with a real copy of the file, or remove it "
                               "(--force does not override this).", EXIT_BAD_INPUT)
        if not self.problems:
            return None
        code = max(c for _, c in self.problems)
        text = "; ".join(p for p, _ in self.problems)
        return PushRefused(f"refusing to push {self.folder}: {text} (pass --force to push anyway).", code)


def validate_repo_id(repo_id: str) -> str:
    """``ORG/NAME`` as the Hub accepts it; UserError otherwise."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id as hub_validate

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise UserError(f"--repo-id must be ORG/NAME (a user or organisation and a model name), got {repo_id!r}.")
    try:
        hub_validate(repo_id)
    except HFValidationError as e:
        raise UserError(f"--repo-id {repo_id!r} is not a valid Hub repository id: {str(e).splitlines()[0]}") from e
    return repo_id


def _classify(path: Path) -> tuple[bool, str]:
    """(upload?, what or why not) for one entry of the checkpoint folder, by its name (see _check for its kind)."""
    name = path.name
    if name.startswith("."):
        return False, "hidden or temporary"
    if path.is_symlink() and not os.path.exists(path):
        return False, "broken link"
    if path.is_dir():
        return False, "folder (a checkpoint is flat)"
    if any(fnmatch.fnmatch(name, p) for p in PICKLES):
        return False, "pickle or array file: never uploaded"
    if GLOB_CHARS & set(name):
        return False, "name with glob characters"
    if name in CHECKPOINT_FILES:
        return True, CHECKPOINT_FILES[name]
    for pattern, what in CHECKPOINT_PATTERNS.items():
        if fnmatch.fnmatch(name, pattern):
            return True, what
    return False, "not part of an fbn_prune checkpoint"


def _wanted(name: str) -> bool:
    """Is ``name`` one of a checkpoint's file names (see _classify)?"""
    return name in CHECKPOINT_FILES or any(fnmatch.fnmatch(name, p) for p in CHECKPOINT_PATTERNS)


def _outside_link(root: Path, entry: Path) -> str | None:
    """Why ``entry`` must not be followed (a link whose target lies outside ``root``, resolved), else None."""
    if not entry.is_symlink():
        return None
    target = Path(os.path.realpath(entry))
    return None if target == root or root in target.parents else f"a link to {target}, outside the folder"


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return what
    return "not a regular file"


def _check(root: Path, entry: Path) -> CheckedFile | str:
    """The checked file behind ``entry`` (links resolved), or why it must not be sent. ``root`` is resolved."""
    try:
        st = os.lstat(entry)
        target = entry
        if stat.S_ISLNK(st.st_mode):
            outside = _outside_link(root, entry)
            if outside:
                return outside
            target = Path(os.path.realpath(entry))
            st = os.stat(target)
    except OSError as e:
        return f"unreadable ({e.strerror or type(e).__name__})"
    if not stat.S_ISREG(st.st_mode):
        return f"{_kind(st.st_mode)}, not a regular file"
    if st.st_nlink > 1:
        return f"a hard link ({st.st_nlink} names: the others may lie outside the folder)"
    return CheckedFile(entry.name, target, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@contextlib.contextmanager
def open_checked(c: CheckedFile):
    """A binary file object on exactly the file ``c`` checked; PushRefused when it was swapped or changed kind since
    (a link put in its place, another file renamed over it). Never blocks on a fifo."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(c.path, flags)
    except OSError as e:
        raise PushRefused(f"{c.name} ({c.path}) changed since it was checked ({e.strerror or type(e).__name__}); "
                          "nothing was uploaded: run the push again.") from None
    f = os.fdopen(fd, "rb")
    try:
        st = os.fstat(fd)  # the file now open: the one checked, unchanged?
        if not stat.S_ISREG(st.st_mode) or not c.same(st) or st.st_nlink > 1:
            raise PushRefused(f"{c.name} ({c.path}) was replaced since it was checked; nothing was uploaded: "
                              "check the folder and run the push again.")
        yield f
    finally:
        f.close()


def _read_checked(c: CheckedFile | None) -> str | None:
    if c is None:
        return None
    with open_checked(c) as f:
        return f.read().decode("utf-8")


def _read_info(source: CheckedFile | None) -> tuple[dict | None, str | None]:
    from fbn_prune.export.checkpoint import PROVENANCE_FILE

    if source is None:
        return None, f"it has no {PROVENANCE_FILE} (not an fbn_prune checkpoint, or an unfinished one)"
    try:
        info = json.loads(_read_checked(source) or "")
    except (OSError, ValueError) as e:
        return None, f"its {PROVENANCE_FILE} cannot be read ({type(e).__name__})"
    if not isinstance(info, dict):
        return None, f"its {PROVENANCE_FILE} is not a JSON object"
    return info, None


def _gate(info: dict) -> dict | None:
    ev = info.get("evaluation")
    return ev.get("gate") if isinstance(ev, dict) and isinstance(ev.get("gate"), dict) else None


def plan(folder: str | os.PathLike, repo_id: str, *, revision: str | None = None, private: bool = False,
         force: bool = False, require_eval: bool = False, license_lookup=None) -> Plan:
    """Decide what pushing ``folder`` to ``repo_id`` means (no network unless ``license_lookup`` uses it).

    ``license_lookup(hub_id) -> str | None`` finds the base model's licence when the card has none
    (default: :func:`fbn_prune.ship.card.base_license` offline: the local Hugging Face cache, then the
    licences of the recipes' models). Raises :class:`PushRefused` unless ``force`` when the folder
    must not be pushed; UserError for a folder that does not exist or holds no weights.
    """
    from fbn_prune.ship import card as cards

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"{folder} is not a folder.")
    validate_repo_id(repo_id)
    if revision is not None and not revision.strip():
        raise UserError("--revision must not be empty.")
    p = Plan(folder=root, repo_id=repo_id, revision=revision, private=private, forced=force)

    # files: only regular files inside the folder are sent (links resolved; see the module's doc)
    resolved = root.resolve()
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        outside = _outside_link(resolved, entry)
        if outside and _wanted(entry.name):  # whatever lies there (file, folder, device): never followed
            p.unsafe.append((entry.name, outside))
            continue
        upload, what = _classify(entry)
        if not upload:
            p.skipped.append((entry.name, what))
            continue
        checked = _check(resolved, entry)
        if isinstance(checked, str):
            p.unsafe.append((entry.name, checked))
            continue
        p.files.append((entry.name, checked.size, what))
        p.sources[entry.name] = checked
    if p.unsafe:  # nothing of this folder is read further: a listed name may point anywhere
        raise _with_plan(p.refusal(), p)  # type: ignore[arg-type]
    if not any(fnmatch.fnmatch(n, "*.safetensors") for n in p.names):
        raise UserError(f"{folder} holds no *.safetensors weights: nothing to push.")

    # provenance, verification, gate
    info, why = _read_info(p.sources.get(PROVENANCE))
    p.info = info
    if info is None:
        p.problems.append((why, EXIT_BAD_INPUT))  # type: ignore[arg-type]
    else:
        if info.get("verified") is not True:
            ver = info.get("verification") or {}
            diff = ver.get("relative_diff")
            detail = f" (max relative logit diff {diff:.3g})" if isinstance(diff, (int, float)) else ""
            p.problems.append((f"its verification against the original model failed or is missing{detail}", EXIT_VERIFY_FAILED))
        gate = _gate(info)
        if gate is not None and gate.get("passed") is False:
            p.problems.append((f"its evaluation gate failed ({gate.get('summary') or 'see eval.md'})", EXIT_GATE_FAILED))
        elif require_eval and (gate is None or gate.get("passed") is not True):
            what = "no evaluation is recorded" if not info.get("evaluation") else "its evaluation had no gate"
            p.problems.append((f"--require-eval: {what} (run fbn-prune eval ... --max-drop/--min-retention)", EXIT_GATE_FAILED))

    # the card
    try:
        text: str | None = _read_checked(p.sources.get("README.md"))
    except UnicodeDecodeError:
        raise UserError(f"{root / 'README.md'} is not UTF-8 text; fix or remove the model card.") from None
    if text is None and info is not None:
        try:
            text = cards.render(info, license=info.get("license"))
            p.files.append(("README.md", 0, "model card"))
            p.files.sort()
            p.card_changes.append("generated from fbn_prune.json (the folder has none)")
        except (KeyError, TypeError, ValueError) as e:
            p.warnings.append(f"no README.md and none can be made from fbn_prune.json ({type(e).__name__}: {e})")
    if text is None:
        p.warnings.append("no model card: the repository gets no README.md")
    else:
        moved = cards.for_repo(text, repo_id)
        if moved != text:
            p.card_changes.append(f"load snippet names {repo_id}")
        text = moved
        try:
            from huggingface_hub import ModelCard

            meta = ModelCard(text, ignore_metadata_errors=True).data.to_dict()
        except Exception:
            meta = {}
        if not meta.get("license"):
            hub_id = meta.get("base_model") or (info or {}).get("base_model_hub_id")
            hub_id = hub_id if isinstance(hub_id, str) else None
            found = (license_lookup or cards.base_license)(hub_id) if hub_id else None
            if found:
                text = cards.with_license(text, found)
                p.card_changes.append(f"license {found} (the base model's, {hub_id})")
        errors, warnings = cards.validate(text)
        p.warnings += [f"card: {w}" for w in warnings]
        if errors:
            p.problems.append(("its model card's metadata is invalid: " + "; ".join(errors), EXIT_BAD_INPUT))
        p.card = text
        for i, (name, _, what) in enumerate(p.files):
            if name == "README.md":
                p.files[i] = (name, len(text.encode("utf-8")), what)

    if p.problems and not force:
        raise _with_plan(p.refusal(), p)  # type: ignore[arg-type]
    return p


def _with_plan(error: PushRefused, p: Plan) -> PushRefused:
    error.plan = p  # type: ignore[attr-defined]  # the CLI still prints the listing
    return error


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def token_source() -> str | None:
    """Where the token would come from ("HF_TOKEN", "huggingface_hub login"), never the token itself."""
    if os.environ.get("HF_TOKEN"):
        return "HF_TOKEN"
    try:
        from huggingface_hub import get_token

        return "huggingface_hub login" if get_token() else None
    except Exception:
        return None


def describe(p: Plan, dry_run: bool = False) -> str:
    """The listing ``fbn-prune push`` prints (the same with and without --dry-run)."""
    info = p.info or {}
    where = f"{(os.environ.get('HF_ENDPOINT') or 'https://huggingface.co').rstrip('/')}/{p.repo_id}"
    head = f"{'dry run: ' if dry_run else ''}push {p.folder} -> {where}"
    head += f" (revision {p.revision or 'main'}{', private if created' if p.private else ''})"
    lines = [head]
    if info:
        ver = info.get("verification") or {}
        diff = ver.get("relative_diff")
        lines.append(f"  verification  {'passed' if info.get('verified') is True else 'FAILED or missing'}"
                     + (f" (max relative logit diff {diff:.2e})" if isinstance(diff, (int, float)) else ""))
        gate = _gate(info)
        if gate is not None:
            lines.append(f"  evaluation    {gate.get('summary') or ('gate passed' if gate.get('passed') else 'gate FAILED')}")
        elif info.get("evaluation"):
            lines.append("  evaluation    evaluated, no gate")
        else:
            lines.append("  evaluation    none recorded")
    if p.card_changes:
        lines.append("  card          README.md: " + "; ".join(p.card_changes))
    lines.append(f"  upload        {len(p.files)} files, {_size(p.total_bytes)}:")
    width = max((len(n) for n in p.names), default=0)
    for name, size, what in p.files:
        lines.append(f"    {name:<{width}}  {_size(size):>10}  {what}")
    lines.append(f"  replaces      files of an earlier push matching {', '.join(REPLACED_PATTERNS)} that are "
                 "not in this upload are deleted from the branch")
    if p.skipped:
        lines.append(f"  skipped       {len(p.skipped)}:")
        for name, why in p.skipped:
            lines.append(f"    {name}  ({why})")
    for w in p.warnings:
        lines.append(f"  warning       {w}")
    for name, why in p.unsafe:
        lines.append(f"  {'REFUSED':<13} {name}: {why} (only regular files inside the folder are sent)")
    for problem, _ in p.problems:
        lines.append(f"  {'FORCED' if p.forced else 'REFUSED':<13} {problem}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- upload
class _Redact(logging.Filter):
    """Replaces the token in every log record that passes a handler."""

    def __init__(self, secret: str):
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        if self.secret in message:
            record.msg, record.args = message.replace(self.secret, "***"), None
        return True


@contextlib.contextmanager
def _redacted_logs(secret: str):
    handlers = list(logging.getLogger().handlers)
    for name in ("huggingface_hub", "fbn_prune", "httpx", "httpx2", "httpcore", "urllib3"):
        handlers += logging.getLogger(name).handlers
    filt = _Redact(secret)
    for h in handlers:
        h.addFilter(filt)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(filt)


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub read it at import, or as the environment says now."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return constants.is_offline_mode() or now.strip().lower() in ("1", "on", "yes", "true")


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def commit_message(p: Plan) -> str:
    info = p.info or {}
    sel = info.get("selection") or {}
    if sel.get("achieved_ratio") is not None:
        return (f"fbn_prune {info.get('fbn_prune_version', __version__)}: {sel.get('method')}, "
                f"{sel['achieved_ratio']:.1%} of FFN channels removed from {info.get('base_model')}")
    return f"Upload {p.folder.name} with fbn_prune {__version__}"


def push(p: Plan, *, token: str | None = None, endpoint: str | None = None, message: str | None = None):
    """Upload plan ``p``; return huggingface_hub's CommitInfo. ``token`` defaults to HF_TOKEN or the login,
    ``endpoint`` to ``$HF_ENDPOINT`` (else huggingface.co)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token

    if p.problems and not p.forced:
        raise p.refusal()  # type: ignore[misc]
    if offline():
        raise UserError("HF_HUB_OFFLINE is set: unset it to push to the Hub.")
    token = token or get_token()
    if not token:
        raise UserError("no Hugging Face token: set HF_TOKEN or log in with `hf auth login` (a token with write access).")
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    api = HfApi(endpoint=endpoint, token=token)
    with _redacted_logs(token), contextlib.ExitStack() as files:
        adds = []
        for name in p.names:  # the bytes sent are those of the files the plan checked, opened now
            if name == "README.md" and p.card is not None:
                adds.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=p.card.encode("utf-8")))
            else:
                adds.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=files.enter_context(
                    open_checked(p.sources[name]))))
        try:
            api.create_repo(p.repo_id, repo_type="model", private=True if p.private else None, exist_ok=True)
            if p.revision and p.revision != "main":
                api.create_branch(p.repo_id, branch=p.revision, repo_type="model", exist_ok=True)
            present = api.list_repo_files(p.repo_id, repo_type="model", revision=p.revision)
            stale = [CommitOperationDelete(path_in_repo=f) for f in present
                     if f not in p.names and any(fnmatch.fnmatch(f, pat) for pat in REPLACED_PATTERNS)]
            return api.create_commit(repo_id=p.repo_id, repo_type="model", operations=[*adds, *stale],
                                     commit_message=message or commit_message(p), revision=p.revision)
        except UserError:
            raise
        except Exception as e:
            raise UploadFailed(_hub_error(e, p.repo_id, token)) from None


def _hub_error(e: Exception, repo_id: str, token: str | None) -> str:
    status = getattr(getattr(e, "response", None), "status_code", None)
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if status == 401:
        text = "the Hub rejected the token (401): check HF_TOKEN or `hf auth login`"
    elif status == 403:
        text = f"the token may not write to {repo_id} (403): it needs write access to that user or organisation"
    else:
        text = f"upload to {repo_id} failed: {first}"
    return _scrub(text, token)
