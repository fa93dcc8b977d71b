"""Which files of a checkpoint folder ``fbn-prune push`` sends, and reading exactly those.

A file is sent when its name is one of a checkpoint's (:data:`CHECKPOINT_FILES`, :data:`CHECKPOINT_PATTERNS`)
and it is a regular file inside the folder: every name is resolved (links followed); a link whose target
lies outside the folder, a hard link (a file with more than one name, whose other name may be anywhere), a
fifo, socket or device is refused (:func:`check_file` says why). A link inside the folder to a regular file
inside it is sent under the link's name. What was checked (:class:`CheckedFile`: device, inode, size, times)
is what :func:`open_checked` opens later, or it refuses.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from fbn_prune.errors import EXIT_BAD_INPUT, UserError

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



class PushRefused(UserError):
    """The folder must not be pushed (without --force); exit code 2, 3 or 4 by the reason."""

    def __init__(self, message: str, exit_code: int = EXIT_BAD_INPUT):
        super().__init__(message)
        self.exit_code = exit_code


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


def classify(path: Path) -> tuple[bool, str]:
    """(upload?, what or why not) for one entry of the checkpoint folder, by its name (see check_file for its kind)."""
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


def wanted(name: str) -> bool:
    """Is ``name`` one of a checkpoint's file names (see classify)?"""
    return name in CHECKPOINT_FILES or any(fnmatch.fnmatch(name, p) for p in CHECKPOINT_PATTERNS)


def outside_link(root: Path, entry: Path) -> str | None:
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


def check_file(root: Path, entry: Path) -> CheckedFile | str:
    """The checked file behind ``entry`` (links resolved), or why it must not be sent. ``root`` is resolved."""
    try:
        st = os.lstat(entry)
        target = entry
        if stat.S_ISLNK(st.st_mode):
            outside = outside_link(root, entry)
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


def read_checked(c: CheckedFile | None) -> str | None:
    if c is None:
        return None
    with open_checked(c) as f:
        return f.read().decode("utf-8")
