"""Evaluation tasks that run fully offline from local data files.

lm-eval 0.4.13's built-in ``piqa``, ``arc_easy``, ``lambada_openai`` and ``wikitext`` download
Hugging Face datasets. This package ships YAML templates of the same four tasks, derived from
lm-eval's own YAMLs (same prompts, choices, targets, metrics; each template says what differs),
that read the plain files of a data folder (``--data-dir`` or ``$FBN_PRUNE_DATA``) laid out as::

    piqa/valid.jsonl, piqa/valid-labels.lst
    arc_easy/ARC-Easy-{Train,Dev,Test}.jsonl
    lambada/lambada_test.jsonl
    wikitext2/{valid,test}.txt

At run time the templates are rendered, with absolute paths, into a cached folder (the
files that are not in Hugging Face's field layout are converted there once, see
:mod:`fbn_prune.texts.tasks.utils`) which is handed to :class:`lm_eval.tasks.TaskManager` as an
``include_path``. lm-eval lets a later include path override a built-in task of the same
name, so the local tasks keep the standard names: ``--tasks piqa`` means the local one.

Public API: :func:`data_dir`, :func:`render`, :func:`render_to`, :func:`task_manager`, :func:`resolve_tasks`,
:func:`task_documents`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lm_eval.tasks
from lm_eval.tasks import TaskManager
from lm_eval.tasks._index import Kind

from fbn_prune.config import datadir
from fbn_prune.config.datadir import DATA_ENV
from fbn_prune.errors import UserError
from fbn_prune.texts.tasks import utils

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent
_BUILTIN_TASKS = Path(lm_eval.tasks.__file__).resolve().parent


@dataclass(frozen=True)
class LocalTask:
    """One task that fbn_prune can run from local files."""

    name: str
    """Task name, the same as lm-eval's built-in it replaces."""
    files: tuple[str, ...]
    """Files it needs, relative to the data folder."""
    convert: Callable[[Path, Path], None] | None
    """Writes Hugging Face-shaped JSON lines under ``<rendered>/data`` (None: files used as they are)."""

    @property
    def template(self) -> Path:
        """The YAML template of this task."""
        return TEMPLATES / f"{self.name}.yaml"


LOCAL_TASKS: dict[str, LocalTask] = {
    t.name: t
    for t in (
        LocalTask(
            "arc_easy",
            tuple(f"arc_easy/{f}" for f in utils.ARC_EASY_SPLITS.values()),
            utils.convert_arc_easy,
        ),
        LocalTask("lambada_openai", ("lambada/lambada_test.jsonl",), None),
        LocalTask("piqa", ("piqa/valid.jsonl", "piqa/valid-labels.lst"), utils.convert_piqa),
        LocalTask(
            "wikitext",
            tuple(f"wikitext2/{f}" for f in utils.WIKITEXT_SPLITS.values()),
            utils.convert_wikitext,
        ),
    )
}
"""The local tasks, by name."""

_HINT = f"set --data-dir or {DATA_ENV}"


# ----------------------------------------------------------------------------- data folder
_find_data_dir = datadir.find
"""The data folder the user named (``--data-dir``, else ``$FBN_PRUNE_DATA``), or None; see :mod:`fbn_prune.config.datadir`."""


def missing_files(data: Path | None, task: str) -> list[str]:
    """The files of local task ``task`` that are not in ``data`` (all of them when ``data`` is None)."""
    files = LOCAL_TASKS[task].files
    return list(files) if data is None else [f for f in files if not (data / f).is_file()]


def _missing_message(data: Path | None, task: str, missing: list[str]) -> str:
    where = f"in {data}" if data is not None else "(no data folder given)"
    return f"missing data file {missing[0]} for task {task} {where}; {_HINT}."


def data_dir(explicit: str | os.PathLike[str] | None = None, tasks: Iterable[str] | None = None) -> Path:
    """Resolve the evaluation data folder.

    Order: ``explicit`` (the ``--data-dir`` option), else the ``FBN_PRUNE_DATA`` environment
    variable; there is no default folder.

    Args:
        explicit: folder given by the user, if any.
        tasks: local task names whose files must be present (names that are not local tasks
            are ignored). None checks nothing beyond the folder itself.

    Raises:
        UserError: no folder found, a named folder does not exist, or a file needed by one of
            ``tasks`` is missing ("missing data file X for task Y; set --data-dir or FBN_PRUNE_DATA").
    """
    data = _find_data_dir(explicit)
    for task in tasks or ():
        if task in LOCAL_TASKS and (missing := missing_files(data, task)):
            raise UserError(_missing_message(data, task, missing))
    if data is None:
        raise UserError(f"no evaluation data folder given; {_HINT}.")
    return data


# ----------------------------------------------------------------------------- rendering
def _render_root() -> Path:
    """Where rendered task folders are cached: ``<fbn_prune cache>/tasks``."""
    from fbn_prune.models.sources import cache_dir

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
    root = _render_root()
    final = root / _render_key(data, names)
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".render-", dir=root))
    try:
        _write_tasks(data, names, tmp, final)
        try:
            tmp.rename(final)
        except OSError:  # rendered meanwhile by another process: keep theirs
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
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
        raise UserError(f"no task data found in {data}; {_HINT} to the evaluation data folder.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        _write_tasks(data, names, tmp, folder)
        os.chmod(tmp, 0o755)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return names


# ----------------------------------------------------------------------------- task manager
class LocalTaskManager(TaskManager):
    """A :class:`lm_eval.tasks.TaskManager` that also records what :func:`task_manager` rendered.

    Attributes:
        data_dir: the data folder used (None when none was found).
        rendered: the rendered include folder (None when no local task was rendered).
        local_tasks: the local tasks registered, overriding lm-eval's built-ins of the same name.
        missing: local task name -> one-sentence reason it is not available.
    """

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
) -> LocalTaskManager:
    """Build lm-eval's task manager with the local tasks (those whose files exist) and ``include_path``.

    The local tasks override lm-eval's built-ins of the same names; user ``include_path``
    folders come last and so override both. The built-in version of a local task whose
    files are missing stays in the index (it needs the Hub): :func:`resolve_tasks` refuses it.

    Args:
        include_path: extra folders of task YAMLs.
        data: the data folder (``--data-dir``); see :func:`data_dir` for the fallbacks.

    Raises:
        UserError: ``data`` (or ``FBN_PRUNE_DATA``) names a folder that does not exist, or an
            include path does not exist.
    """
    found = _find_data_dir(data)
    missing: dict[str, str] = {}
    for name in LOCAL_TASKS:
        if lacking := missing_files(found, name):
            missing[name] = _missing_message(found, name, lacking)
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
        tm = LocalTaskManager(
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


# ----------------------------------------------------------------------------- calibration text
_SPLITS = {
    "train": ("has_training_docs", "training_docs"),
    "validation": ("has_validation_docs", "validation_docs"),
    "test": ("has_test_docs", "test_docs"),
}
"""Split name -> lm-eval Task methods (has it?, its documents after process_docs)."""


def _gold_index(gold: Any, choices: list[str]) -> int:
    """lm-eval's reading of a multiple-choice target: an index, a list of indices (first kept) or a choice string."""
    if isinstance(gold, list):
        gold = gold[0]
    if isinstance(gold, str):
        return choices.index(gold) if gold in choices else int(gold)
    return int(gold)


def render_document(task: Any, doc: dict[str, Any]) -> str:
    """One document as the model reads it in lm-eval, with the gold answer appended.

    Mirrors ``ConfigurableTask.construct_requests`` (zero-shot): ``loglikelihood`` -> context +
    target; ``multiple_choice`` -> context + target_delimiter + gold choice (for multiple-input
    tasks such as winogrande: gold context + delimiter + target); ``loglikelihood_rolling`` ->
    the target text alone; ``generate_until`` -> context + delimiter + target.
    """
    kind = task.OUTPUT_TYPE
    if kind == "loglikelihood_rolling":
        return str(task.doc_to_target(doc))
    delim = task.config.target_delimiter
    ctx = task.fewshot_context(doc=doc, num_fewshot=0)
    if kind == "multiple_choice":
        choices = task.doc_to_choice(doc)
        if task.multiple_input:
            return f"{ctx[_gold_index(task.doc_to_text(doc), choices)]}{delim}{task.doc_to_target(doc)}"
        return f"{ctx}{delim}{choices[_gold_index(task.doc_to_target(doc), choices)]}"
    target = task.doc_to_target(doc)
    if isinstance(target, list):
        target = target[0]
    if kind == "loglikelihood":
        return f"{ctx}{target}"
    return f"{ctx}{delim}{target}"


def task_documents(
    name: str,
    n: int | None = None,
    split: str = "train",
    seed: int = 0,
    tm: TaskManager | None = None,
) -> list[str]:
    """A task's documents rendered with its own prompt format, for use as calibration text.

    Uses ``split`` if the task has it, else the first available of train, validation, test
    (logged; a warning when that is the split lm-eval evaluates on, since calibration then
    sees the evaluation documents). Prompts come from lm-eval's Task object, see
    :func:`render_document`.

    Args:
        name: one task name (not a group or tag).
        n: number of documents; None for all. Fewer than available: a seeded random sample,
            returned in dataset order.
        split: preferred split: "train", "validation" or "test".
        seed: seed of the sample.
        tm: task manager; None builds :func:`task_manager` with the default data folder.

    Raises:
        UserError: unknown name, a name of several tasks (group, tag, pattern), a bad split
            name or ``n`` < 1.
    """
    if split not in _SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {', '.join(_SPLITS)}.")
    if n is not None and n < 1:
        raise UserError(f"the number of calibration documents must be at least 1, not {n}.")
    tm = tm if tm is not None else task_manager()
    resolved = resolve_tasks([name], tm)
    entry = tm.task_index.get(resolved[0])
    if len(resolved) != 1 or (entry is not None and entry.kind not in (Kind.TASK, Kind.PY_TASK)):
        what = "pattern" if len(resolved) != 1 else entry.kind.name.lower()  # type: ignore[union-attr]
        raise UserError(f"{name} is a {what} of several tasks; calibration text needs a single task.")
    loaded = tm.load(resolved)
    if len(loaded["tasks"]) != 1:
        raise UserError(f"{name} names several tasks; calibration text needs a single task.")
    (task,) = loaded["tasks"].values()

    order = [split] + [s for s in _SPLITS if s != split]
    chosen = next((s for s in order if getattr(task, _SPLITS[s][0])()), None)
    if chosen is None:
        raise UserError(f"task {name} has no train, validation or test split.")
    docs = getattr(task, _SPLITS[chosen][1])()
    total = len(docs)
    idx = list(range(total)) if n is None or n >= total else sorted(random.Random(seed).sample(range(total), n))
    log.info("%s: %d calibration documents from its %s split (of %d)", name, len(idx), chosen, total)
    if chosen != split:
        log.warning("%s has no %s split; calibration documents come from %s.", name, split, chosen)
    if chosen == ("test" if task.has_test_docs() else "validation"):
        log.warning("%s: calibration uses the %s split, which lm-eval also evaluates on.", name, chosen)
    return [render_document(task, docs[i]) for i in idx]
