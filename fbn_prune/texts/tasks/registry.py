"""The local evaluation tasks: which tasks run offline and the data files each needs.

The local evaluation tasks: which tasks fbn_prune runs from local files, the files each needs, and
the data folder they are read from (``--data-dir`` or ``$FBN_PRUNE_DATA``).

Public API: :class:`LocalTask`, :data:`LOCAL_TASKS`, :func:`missing_files`, :func:`missing_message`,
:func:`data_dir`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fbn_prune.config import datadir
from fbn_prune.config.datadir import DATA_ENV
from fbn_prune.errors import UserError
from fbn_prune.texts.tasks import utils

TEMPLATES = Path(__file__).parent
"""The folder of the YAML templates (beside this module)."""


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

HINT = f"set --data-dir or {DATA_ENV}"


def missing_files(data: Path | None, task: str) -> list[str]:
    """The files of local task ``task`` that are not in ``data`` (all of them when ``data`` is None)."""
    files = LOCAL_TASKS[task].files
    return list(files) if data is None else [f for f in files if not (data / f).is_file()]


def missing_message(data: Path | None, task: str, missing: list[str]) -> str:
    where = f"in {data}" if data is not None else "(no data folder given)"
    return f"missing data file {missing[0]} for task {task} {where}; {HINT}."


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
    data = datadir.find(explicit)
    for task in tasks or ():
        if task in LOCAL_TASKS and (missing := missing_files(data, task)):
            raise UserError(missing_message(data, task, missing))
    if data is None:
        raise UserError(f"no evaluation data folder given; {HINT}.")
    return data
