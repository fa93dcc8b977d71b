"""Which model is this: content hashes, Hub id and revision; and whether a checkpoint was pruned from it.

A model's identity (:class:`ModelIdentity`) is recorded in a checkpoint's fbn_prune.json when it
is pruned (``base_model_identity``) and compared with ``fbn-prune eval --base`` before anything is
evaluated (:func:`check_base`):

* a local folder (or an fbn_prune checkpoint): the content hash of every file that can change its
  outputs (weights, config, tokenizer, remote code; by name and sha256);
* a GGUF file or the embedded ``smollm2``: the sha256 of the .gguf file, and the content hash of the
  safetensors folder it was converted to (either matching is enough);
* a Hub id: the id, the revision (the commit of the cached snapshot) and the snapshot's content hash,
  when the snapshot is in the local Hugging Face cache.

Hashes of files are remembered by (path, size, mtime) under ``<fbn_prune cache>/eval/``, so
multi-GB weights are read once.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

from fbn_prune._io.atomic import atomic_write
from fbn_prune._runtime.cache import cache_dir
from fbn_prune.models.sources import EMBEDDED, EMBEDDED_ALIASES, _sha256

log = logging.getLogger(__name__)

NOT_MODEL_FILES = frozenset({"README.md", "fbn_prune.json", "recipe.yaml", "eval.json", "eval.md", "eval-docs.jsonl",
                             "search.json", "search.png"})
"""Files of a model folder that cannot change its outputs (left out of the model hash)."""


# ----------------------------------------------------------------------------- hashing


def _hash_store() -> Path:

    return cache_dir() / "eval" / "file-sha256.json"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's content, remembered by (path, size, mtime) so multi-GB weights are read once."""
    p = Path(path).resolve()
    st = p.stat()
    stamp = [st.st_size, st.st_mtime_ns]
    store = _hash_store()
    try:
        known = json.loads(store.read_text())
    except (OSError, ValueError):
        known = {}
    entry = known.get(str(p))
    if entry and entry[:2] == stamp:
        return entry[2]
    digest = _sha256(p)
    known[str(p)] = [*stamp, digest]
    try:
        atomic_write(store, json.dumps(known))
    except OSError:  # a read-only cache only costs speed
        log.debug("could not record the hash of %s", p)
    return digest


def folder_hash(folder: str | os.PathLike[str]) -> str:
    """Content hash of a model folder: each file that can change its outputs, by name and sha256."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.name not in NOT_MODEL_FILES:
            h.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of a Hub model, if it is in the Hugging Face cache (no network)."""
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an invalid id or an unreadable cache: nothing to hash
        return None
    return Path(found).parent if isinstance(found, str) else None


def model_hash(source) -> str | None:
    """Content hash of a :class:`fbn_prune.models.sources.ModelSource` (its loadable folder); None when the
    model is not on disk (yet)."""
    folder = Path(source.path) if source.local else hub_snapshot(source.spec)
    if folder is None or not folder.is_dir():
        return None
    return folder_hash(folder)


# ----------------------------------------------------------------------------- identity
@dataclass(frozen=True)
class ModelIdentity:
    """What identifies a model across runs and machines.

    Attributes:
        kind: "folder", "gguf", "embedded" or "hub".
        spec: what the user typed (``smollm2``, a path, a Hub id).
        sha256: content hash of the loadable folder (None: a Hub model not in the local cache).
        file_sha256: sha256 of the .gguf file (gguf and embedded models only).
        hub_id: the Hub repository, when known.
        revision: the Hub commit of the cached snapshot (Hub models only, when cached).
    """

    kind: str
    spec: str
    sha256: str | None = None
    file_sha256: str | None = None
    hub_id: str | None = None
    revision: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelIdentity:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


def _gguf_file(spec: str) -> Path | None:
    """The .gguf file behind a spec: the embedded model's file, or the spec itself."""
    key = EMBEDDED_ALIASES.get(spec.lower(), spec.lower())
    if key in EMBEDDED:
        package, filename, _ = EMBEDDED[key]
        found = importlib.util.find_spec(package)
        return Path(found.origin).parent / filename if found and found.origin else None
    return Path(spec).expanduser() if spec.endswith(".gguf") else None


def identify(source, sha256: str | None = None) -> ModelIdentity:
    """The identity of a resolved :class:`fbn_prune.models.sources.ModelSource`; ``sha256`` when already known."""
    digest = sha256 or model_hash(source)
    gguf = _gguf_file(source.spec)
    if gguf is not None and gguf.is_file():
        embedded = EMBEDDED_ALIASES.get(source.spec.lower(), source.spec.lower()) in EMBEDDED
        return ModelIdentity("embedded" if embedded else "gguf", source.spec, digest, file_sha256(gguf),
                             hub_id=source.hub_id)
    if source.local:
        return ModelIdentity("folder", source.spec, digest, hub_id=source.hub_id)
    snapshot = hub_snapshot(source.spec)
    return ModelIdentity("hub", source.spec, digest, hub_id=source.hub_id,
                         revision=snapshot.name if snapshot is not None else None)


@dataclass(frozen=True)
class BaseCheck:
    """Whether the given base is the model a checkpoint was pruned from.

    ``verdict``: "match", "mismatch" or "unverified" (an old checkpoint without a recorded identity
    whose base folder is gone); ``reason``: one sentence.
    """

    verdict: str
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def check_base(provenance: dict, given: ModelIdentity, given_path: str | None) -> BaseCheck:
    """Compare the base model recorded in a checkpoint's fbn_prune.json with ``given``.

    Content hashes decide when both sides have one; otherwise the Hub id and revision. Checkpoints
    written before identities were recorded fall back to the recorded folder (hashed now) or Hub id.
    """
    recorded = provenance.get("base_model_identity")
    if isinstance(recorded, dict):
        r = ModelIdentity.from_dict(recorded)
        if r.file_sha256 and r.file_sha256 == given.file_sha256:
            return BaseCheck("match", "the same GGUF file")
        if r.sha256 and given.sha256:
            if r.sha256 == given.sha256:
                return BaseCheck("match", "the same content hash")
            return BaseCheck("mismatch", f"its content hash {given.sha256[:12]} differs from the recorded "
                                         f"{r.sha256[:12]} of {r.spec!r}")
        if r.kind == given.kind == "hub" and r.hub_id and given.hub_id:
            if r.hub_id != given.hub_id:
                return BaseCheck("mismatch", f"it is {given.hub_id!r}, the checkpoint was pruned from {r.hub_id!r}")
            if r.revision and given.revision and r.revision != given.revision:
                return BaseCheck("mismatch", f"revision {given.revision[:12]} of {given.hub_id} differs from the "
                                             f"recorded {r.revision[:12]}")
            return BaseCheck("match", "the same Hub id" + (" and revision" if r.revision and given.revision else ""))
        return BaseCheck("mismatch", f"it cannot be compared with the recorded {r.kind} {r.spec!r} "
                                     "(no content hash on one side)")
    path = provenance.get("base_model_path")
    if path and Path(path).is_dir():
        if given_path and Path(given_path).resolve() == Path(path).resolve():
            return BaseCheck("match", "the recorded base folder")
        if given.sha256 and folder_hash(path) == given.sha256:
            return BaseCheck("match", "the same content as the recorded base folder")
        return BaseCheck("mismatch", f"its content differs from the recorded base folder {path}")
    hub = provenance.get("base_model_hub_id")
    if hub and given.hub_id:
        if hub == given.hub_id:
            return BaseCheck("match", "the same Hub id")
        return BaseCheck("mismatch", f"it is {given.hub_id!r}, the checkpoint was pruned from {hub!r}")
    return BaseCheck("unverified", "the checkpoint records no base model identity and its base folder is gone")


__all__ = [
    "NOT_MODEL_FILES",
    "BaseCheck",
    "ModelIdentity",
    "check_base",
    "file_sha256",
    "folder_hash",
    "hub_snapshot",
    "identify",
    "model_hash",
]
