"""A task's documents rendered in its own prompt format, used as calibration text.

A task's documents rendered with its own prompt format, as lm-eval shows them to the model: the
calibration text of ``--calib-task`` (task-specific networks).

Public API: :func:`render_document`, :func:`task_documents`.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Any

from fbn_prune.errors import UserError
from fbn_prune.texts.tasks.manager import resolve_tasks, task_manager

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

log = logging.getLogger("fbn_prune.texts.tasks")


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
    from lm_eval.tasks._index import Kind  # heavy (seconds): only when documents are asked for

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
