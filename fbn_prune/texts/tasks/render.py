"""Rendering the local task templates into task folders that point at the data folder.

Rendering the local task templates: the YAMLs beside this module, with absolute paths to a data
folder, plus the converted data files (:mod:`fbn_prune.texts.tasks.utils`), into a cached folder
(:func:`render`, handed to lm-eval as an include path) or a folder of the user's (:func:`render_to`).

Public API: :func:`render`, :func:`render_to`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path

from fbn_prune._io.atomic import atomic_dir
from fbn_prune._runtime.cache import cache_dir
from fbn_prune.errors import UserError
from fbn_prune.texts.tasks import utils
from fbn_prune.texts.tasks.registry import HINT, LOCAL_TASKS, TEMPLATES, missing_files

log = logging.getLogger("fbn_prune.texts.tasks")


def _render_root() -> Path:
    """Where rendered task folders are cached: ``<fbn_prune cache>/tasks``."""
    return cache_dir() / "tasks"


def _render_key(data: Path, tasks: list[str]) -> str:
    """A digest of everything a rendered folder depends on: templates, converter code, source files."""
    h = hashlib.sha256()
    for f in sorted(TEMPLATES.glob("*.yaml")) + [Path(utils.__file__)]:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update(str(data).encode())
    for task in tasks:
        for rel in LOCAL_TASKS[task].files:
            st = (data / rel).stat()
            h.update(f"{task}:{rel}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _yaml_str(path: Path) -> str:
    """``path`` escaped for the inside of a double-quoted YAML scalar (JSON escapes are valid YAML)."""
    return json.dumps(str(path))[1:-1]


def render(data: Path, tasks: Iterable[str] | None = None) -> Path:
    """Render the local task YAMLs for ``data`` into a cached folder and return that folder.

    Only tasks whose files are all present are rendered (``tasks`` restricts the set). The
    folder, ``<cache>/tasks/<digest>``, holds one YAML per task plus ``data/`` with the
    converted files; its name changes whenever a template, the converters or a source file
    (size, mtime) changes, so a cached folder is never stale. Writing is atomic (rename).
    """
    data = data.resolve()
    wanted = sorted(LOCAL_TASKS if tasks is None else set(tasks) & set(LOCAL_TASKS))
    names = [t for t in wanted if not missing_files(data, t)]
    final = _render_root() / _render_key(data, names)
    if final.is_dir():
        return final
    # rendered meanwhile by another process: keep theirs
    atomic_dir(final, lambda tmp: _write_tasks(data, names, tmp, final), prefix=".render-")
    log.debug("rendered local tasks %s for %s into %s", names, data, final)
    return final


def _write_tasks(data: Path, names: list[str], folder: Path, final: Path) -> None:
    """Write the YAMLs (and converted data) of ``names`` into ``folder``, with paths pointing at ``final``."""
    for name in names:
        task = LOCAL_TASKS[name]
        if task.convert is not None:
            task.convert(data, folder / "data")
        text = task.template.read_text(encoding="utf-8")
        text = text.replace("@RENDERED@", _yaml_str(final)).replace("@DATA@", _yaml_str(data))
        (folder / f"{name}.yaml").write_text(text, encoding="utf-8")


def render_to(folder: Path, data: Path, tasks: Iterable[str] | None = None) -> list[str]:
    """Render the local tasks whose files are in ``data`` into ``folder`` (for ``lm_eval --include_path``).

    Unlike :func:`render` (a cache folder), ``folder`` is the user's: it is written atomically
    (beside it, then renamed) and must not exist yet. Returns the task names written.

    Raises:
        UserError: none of the tasks has its files in ``data`` (nothing is written).
    """
    data, folder = data.resolve(), folder.expanduser().resolve()
    wanted = sorted(LOCAL_TASKS if tasks is None else set(tasks) & set(LOCAL_TASKS))
    names = [t for t in wanted if not missing_files(data, t)]
    if not names:
        raise UserError(f"no task data found in {data}; {HINT} to the evaluation data folder.")
    atomic_dir(folder, lambda tmp: _write_tasks(data, names, tmp, folder), prefix=f".{folder.name}.tmp-",
               keep_existing=False, mode=0o755)
    return names
