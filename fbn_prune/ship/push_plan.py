"""What ``fbn-prune push`` would do, decided without network or token (``--dry-run`` prints it).

:func:`plan_push` reads the folder: which files go up (the checkpoint's own files, listed by name; pickles,
hidden files, sub-folders and anything else are skipped with a reason; see :mod:`fbn_prune.ship.files`),
the model card that is uploaded as README.md (the folder's card, its load snippet naming the repository,
the base model's licence filled in when it lacks one, its metadata validated locally), and whether the
folder may be pushed at all. It refuses a folder that has no provenance file (``fbn_prune.json``, exit 2),
whose verification failed (exit 4) or whose recorded evaluation gate failed (exit 3), unless ``force``; a
folder with no safetensors weights is refused always, and so is a file that is not a regular file inside
the folder, whatever ``--force`` says (exit 2 naming it). :func:`fbn_prune.ship.upload.push` sends the plan.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import ModelCard
from huggingface_hub.utils import HFValidationError
from huggingface_hub.utils import validate_repo_id as hub_validate

from fbn_prune.errors import EXIT_BAD_INPUT, EXIT_GATE_FAILED, EXIT_VERIFY_FAILED, UserError
from fbn_prune.export.provenance import PROVENANCE_FILE, Provenance
from fbn_prune.ship.card import for_repo, render_card, validate_card, with_license
from fbn_prune.ship.files import (
    REPLACED_PATTERNS,
    CheckedFile,
    PushRefused,
    check_file,
    classify,
    outside_link,
    read_checked,
    wanted,
)
from fbn_prune.ship.hub import base_license, card_license


@dataclass
class PushPlan:
    """What ``fbn-prune push`` will do; :func:`describe_push_plan` prints it."""

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
    info: Provenance | None = None
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
    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise UserError(f"--repo-id must be ORG/NAME (a user or organisation and a model name), got {repo_id!r}.")
    try:
        hub_validate(repo_id)
    except HFValidationError as e:
        raise UserError(f"--repo-id {repo_id!r} is not a valid Hub repository id: {str(e).splitlines()[0]}") from e
    return repo_id


def _read_info(source: CheckedFile | None) -> tuple[Provenance | None, str | None]:
    if source is None:
        return None, f"it has no {PROVENANCE_FILE} (not an fbn_prune checkpoint, or an unfinished one)"
    try:
        data = json.loads(read_checked(source) or "")
    except (OSError, ValueError) as e:
        return None, f"its {PROVENANCE_FILE} cannot be read ({type(e).__name__})"
    if not isinstance(data, dict):
        return None, f"its {PROVENANCE_FILE} is not a JSON object"
    return Provenance.from_dict(data), None


def _gate(info: Provenance) -> dict | None:
    ev = info.evaluation
    return ev.get("gate") if isinstance(ev, dict) and isinstance(ev.get("gate"), dict) else None


def plan_push(folder: str | os.PathLike, repo_id: str, *, revision: str | None = None, private: bool = False,
              force: bool = False, require_eval: bool = False, license_lookup=None) -> PushPlan:
    """Decide what pushing ``folder`` to ``repo_id`` means (no network unless ``license_lookup`` uses it).

    ``license_lookup(hub_id) -> str | None`` finds the base model's licence when the card has none
    (default: :func:`fbn_prune.ship.hub.base_license` offline: the local Hugging Face cache, then the
    licences of the recipes' models). Raises :class:`PushRefused` unless ``force`` when the folder
    must not be pushed; UserError for a folder that does not exist or holds no weights.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"{folder} is not a folder.")
    validate_repo_id(repo_id)
    if revision is not None and not revision.strip():
        raise UserError("--revision must not be empty.")
    p = PushPlan(folder=root, repo_id=repo_id, revision=revision, private=private, forced=force)

    # files: only regular files inside the folder are sent (links resolved; see the module's doc)
    resolved = root.resolve()
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        outside = outside_link(resolved, entry)
        if outside and wanted(entry.name):  # whatever lies there (file, folder, device): never followed
            p.unsafe.append((entry.name, outside))
            continue
        upload, what = classify(entry)
        if not upload:
            p.skipped.append((entry.name, what))
            continue
        checked = check_file(resolved, entry)
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
    info, why = _read_info(p.sources.get(PROVENANCE_FILE))
    p.info = info
    if info is None:
        p.problems.append((why, EXIT_BAD_INPUT))  # type: ignore[arg-type]
    else:
        if info.verified is not True:
            ver = info.verification or {}
            diff = ver.get("relative_diff")
            detail = f" (max relative logit diff {diff:.3g})" if isinstance(diff, (int, float)) else ""
            p.problems.append((f"its verification against the original model failed or is missing{detail}", EXIT_VERIFY_FAILED))
        gate = _gate(info)
        if gate is not None and gate.get("passed") is False:
            p.problems.append((f"its evaluation gate failed ({gate.get('summary') or 'see eval.md'})", EXIT_GATE_FAILED))
        elif require_eval and (gate is None or gate.get("passed") is not True):
            what = "no evaluation is recorded" if not info.evaluation else "its evaluation had no gate"
            p.problems.append((f"--require-eval: {what} (run fbn-prune eval ... --max-drop/--min-retention)", EXIT_GATE_FAILED))

    # the card
    try:
        text: str | None = read_checked(p.sources.get("README.md"))
    except UnicodeDecodeError:
        raise UserError(f"{root / 'README.md'} is not UTF-8 text; fix or remove the model card.") from None
    if text is None and info is not None:
        try:
            text = render_card(info, license=card_license(info))
            p.files.append(("README.md", 0, "model card"))
            p.files.sort()
            p.card_changes.append("generated from fbn_prune.json (the folder has none)")
        except (KeyError, TypeError, ValueError) as e:
            p.warnings.append(f"no README.md and none can be made from fbn_prune.json ({type(e).__name__}: {e})")
    if text is None:
        p.warnings.append("no model card: the repository gets no README.md")
    else:
        moved = for_repo(text, repo_id)
        if moved != text:
            p.card_changes.append(f"load snippet names {repo_id}")
        text = moved
        try:
            meta = ModelCard(text, ignore_metadata_errors=True).data.to_dict()
        except Exception:
            meta = {}
        if not meta.get("license"):
            hub_id = meta.get("base_model") or (info.base_model_hub_id if info is not None else None)
            hub_id = hub_id if isinstance(hub_id, str) else None
            found = (license_lookup or base_license)(hub_id) if hub_id else None
            if found:
                text = with_license(text, found)
                p.card_changes.append(f"license {found} (the base model's, {hub_id})")
        errors, warnings = validate_card(text)
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


def _with_plan(error: PushRefused, p: PushPlan) -> PushRefused:
    error.plan = p  # type: ignore[attr-defined]  # the CLI still prints the listing
    return error


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def describe_push_plan(p: PushPlan, dry_run: bool = False) -> str:
    """The listing ``fbn-prune push`` prints (the same with and without --dry-run)."""
    info = p.info if p.info is not None and p.info.to_dict() else None
    where = f"{(os.environ.get('HF_ENDPOINT') or 'https://huggingface.co').rstrip('/')}/{p.repo_id}"
    head = f"{'dry run: ' if dry_run else ''}push {p.folder} -> {where}"
    head += f" (revision {p.revision or 'main'}{', private if created' if p.private else ''})"
    lines = [head]
    if info:
        ver = info.verification or {}
        diff = ver.get("relative_diff")
        lines.append(f"  verification  {'passed' if info.verified is True else 'FAILED or missing'}"
                     + (f" (max relative logit diff {diff:.2e})" if isinstance(diff, (int, float)) else ""))
        gate = _gate(info)
        if gate is not None:
            lines.append(f"  evaluation    {gate.get('summary') or ('gate passed' if gate.get('passed') else 'gate FAILED')}")
        elif info.evaluation:
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
