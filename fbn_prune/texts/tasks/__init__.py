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

Modules: :mod:`~fbn_prune.texts.tasks.registry` (the local tasks, their files, the data folder),
:mod:`~fbn_prune.texts.tasks.render` (templates into task folders), :mod:`~fbn_prune.texts.tasks.utils`
(file converters), :mod:`~fbn_prune.texts.tasks.manager` (lm-eval's task manager, task-name checks),
:mod:`~fbn_prune.texts.tasks.documents` (a task's documents as calibration text).
"""

