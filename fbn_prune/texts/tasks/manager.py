"""lm-eval's task manager with the local tasks, and the check of task names against it.

The local tasks are rendered (:mod:`fbn_prune.texts.tasks.render`) into a folder that is handed to
:class:`lm_eval.tasks.TaskManager` as an ``include_path``. lm-eval lets a later include path override
a built-in task of the same name, so the local tasks keep the standard names: ``--tasks piqa``
means the local one.

lm_eval itself is imported only when a task manager is built (:func:`local_task_manager_class`).

Public API: :func:`task_manager`, :func:`resolve_tasks`, :func:`local_task_manager_class`.
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fbn_prune.config import datadir
from fbn_prune.errors import UserError
from fbn_prune.texts.tasks.registry import LOCAL_TASKS, missing_files, missing_message
from fbn_prune.texts.tasks.render import render

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

log = logging.getLogger("fbn_prune.texts.tasks")

_BUILTIN_TASKS = Path(importlib.util.find_spec("lm_eval.tasks").origin).resolve().parent  # type: ignore[union-attr,arg-type]
"""lm-eval's own task folder (found without importing lm_eval)."""


@functools.cache
def local_task_manager_class() -> type:
    """``LocalTaskManager``, the class of :func:`task_manager`'s result: a :class:`lm_eval.tasks.TaskManager`
    that also records what :func:`task_manager` rendered. Defined on first use, because importing lm_eval
    takes seconds and the command line imports this module whatever the command.

    Attributes of its instances:
        data_dir: the data folder used (None when none was found).
        rendered: the rendered include folder (None when no local task was rendered).
        local_tasks: the local tasks registered, overriding lm-eval's built-ins of the same name.
        missing: local task name -> one-sentence reason it is not available.
    """
    from lm_eval.tasks import TaskManager  # heavy (seconds): only when a task manager is built

    class LocalTaskManager(TaskManager):
        def __init__(
            self,
            *args: Any,
            data_dir: Path | None = None,
            rendered: Path | None = None,
            local_tasks: Iterable[str] = (),
            missing: dict[str, str] | None = None,
            **kwargs: Any,
        ) -> None:
            super().__init__(*args, **kwargs)
            self.data_dir = data_dir
            self.rendered = rendered
            self.local_tasks = list(local_tasks)
            self.missing = dict(missing or {})

    return LocalTaskManager


class _DropOverrideNotice(logging.Filter):
    """Hide lm-eval's "Task 'x' from <folder> overrides existing task" warnings for our own folder."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = str(folder)

    def filter(self, record: logging.LogRecord) -> bool:
        if "overrides existing task" not in str(record.msg):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        return not any(str(a).startswith(self.folder) for a in args)


def task_manager(
    include_path: list[str] | None = None, data: str | os.PathLike[str] | None = None
) -> TaskManager:
    """Build lm-eval's task manager with the local tasks (those whose files exist) and ``include_path``.

    The local tasks override lm-eval's built-ins of the same names; user ``include_path``
    folders come last and so override both. The built-in version of a local task whose
    files are missing stays in the index (it needs the Hub): :func:`resolve_tasks` refuses it.

    Args:
        include_path: extra folders of task YAMLs.
        data: the data folder (``--data-dir``); see :func:`fbn_prune.texts.tasks.registry.data_dir` for
            the fallbacks.

    Returns:
        a ``LocalTaskManager`` (:func:`local_task_manager_class`).

    Raises:
        UserError: ``data`` (or ``FBN_PRUNE_DATA``) names a folder that does not exist, or an
            include path does not exist.
    """
    found = datadir.find(data)
    missing: dict[str, str] = {}
    for name in LOCAL_TASKS:
        if lacking := missing_files(found, name):
            missing[name] = missing_message(found, name, lacking)
    local = [n for n in LOCAL_TASKS if n not in missing]
    rendered = render(found, local) if found is not None and local else None

    paths: list[str] = [str(rendered)] if rendered is not None else []
    for p in include_path or []:
        if not Path(p).expanduser().exists():
            raise UserError(f"include path {p} does not exist.")
        paths.append(str(Path(p).expanduser()))

    index_log = logging.getLogger("lm_eval.tasks._index")
    notice = _DropOverrideNotice(rendered) if rendered is not None else None
    if notice:
        index_log.addFilter(notice)
    try:
        tm = local_task_manager_class()(
            include_path=paths or None, data_dir=found, rendered=rendered, local_tasks=local, missing=missing
        )
    finally:
        if notice:
            index_log.removeFilter(notice)
    if local:
        log.info("local tasks %s read %s (they replace lm-eval's built-ins)", ", ".join(local), found)
    return tm


def _is_builtin(tm: TaskManager, name: str) -> bool:
    """True when ``name`` resolves to lm-eval's own YAML (not to a local or user include-path task)."""
    entry = tm.task_index.get(name)
    path = getattr(entry, "yaml_path", None)
    return path is None or _BUILTIN_TASKS in Path(path).resolve().parents


def resolve_tasks(names: list[str], tm: TaskManager) -> list[str]:
    """Check task names against ``tm`` and return them, de-duplicated, in order.

    Accepts registered task/group/tag names, glob patterns (``arc_*``) and paths to YAML
    files. A local task whose data files are missing is refused rather than left to fall back
    on lm-eval's built-in (which would reach for the Hub).

    Raises:
        UserError: an unknown name (with the closest known names), a pattern matching nothing,
            or a local task without its data.
    """
    missing: dict[str, str] = getattr(tm, "missing", {})
    out: list[str] = []

    def add(name: str) -> None:
        if name in missing and _is_builtin(tm, name):
            raise UserError(missing[name])
        if name not in out:
            out.append(name)

    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name in tm.all_tasks:
            add(name)
        elif name.endswith((".yaml", ".yml")) and Path(name).expanduser().is_file():
            add(name)
        elif any(ch in name for ch in "*?["):
            matched = tm.match_tasks([name])
            usable = [m for m in matched if not (m in missing and _is_builtin(tm, m))]
            for m in matched:
                if m not in usable:
                    log.warning("skipping %s (matched by %r): %s", m, name, missing[m])
            if not usable:
                raise UserError(missing[matched[0]] if matched else f"task pattern {name!r} matches no task.")
            for m in usable:
                add(m)
        else:
            close = difflib.get_close_matches(name, tm.all_tasks, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else "; `lm_eval ls tasks` lists them."
            raise UserError(f"unknown task {name!r}{hint}")
    if not out:
        raise UserError("no task given.")
    return out
