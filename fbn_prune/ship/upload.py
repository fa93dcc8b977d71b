"""Upload a push plan to the Hugging Face Hub (``fbn-prune push`` without ``--dry-run``).

:func:`push` sends a :class:`fbn_prune.ship.push_plan.PushPlan` with huggingface_hub: ``HfApi.create_repo``
(``exist_ok``), a branch for ``revision`` when given, and one ``create_commit`` of ``CommitOperationAdd`` per
planned file, each reading from a file descriptor opened on exactly the file the plan checked (same device
and inode, still a regular file with one name; :func:`fbn_prune.ship.files.open_checked`), plus deletions of
an earlier push's files matching :data:`fbn_prune.ship.files.REPLACED_PATTERNS` that this one does not upload
again (stale weights go).

The token comes from ``HF_TOKEN`` or the huggingface_hub login (:func:`huggingface_hub.get_token`).
It is passed to huggingface_hub only: never printed, logged (log records are redacted while a push
runs) or written anywhere. Hub errors become :class:`UploadFailed` (exit 5) with the token scrubbed
from their text.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os

import huggingface_hub
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

from fbn_prune import __version__
from fbn_prune.errors import UserError
from fbn_prune.ship.files import REPLACED_PATTERNS, open_checked
from fbn_prune.ship.hub import offline
from fbn_prune.ship.push_plan import PushPlan

EXIT_UPLOAD_FAILED = 5


class UploadFailed(UserError):
    """The Hub refused or could not be reached: exit code 5."""

    exit_code = EXIT_UPLOAD_FAILED


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


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def commit_message(p: PushPlan) -> str:
    info = p.info
    sel = (info.selection if info is not None else None) or {}
    if info is not None and sel.get("achieved_ratio") is not None:
        version = info.fbn_prune_version if info.has("fbn_prune_version") else __version__
        return (f"fbn_prune {version}: {sel.get('method')}, "
                f"{sel['achieved_ratio']:.1%} of FFN channels removed from {info.base_model}")
    return f"Upload {p.folder.name} with fbn_prune {__version__}"


def push(p: PushPlan, *, token: str | None = None, endpoint: str | None = None, message: str | None = None):
    """Upload plan ``p``; return huggingface_hub's CommitInfo. ``token`` defaults to HF_TOKEN or the login,
    ``endpoint`` to ``$HF_ENDPOINT`` (else huggingface.co)."""
    if p.problems and not p.forced:
        raise p.refusal()  # type: ignore[misc]
    if offline():
        raise UserError("HF_HUB_OFFLINE is set: unset it to push to the Hub.")
    token = token or huggingface_hub.get_token()  # looked up now: tests replace it
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
