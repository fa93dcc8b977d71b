"""The settings of an evaluation: everything that makes the original's and the pruned model's runs identical.

Public API: :class:`EvalSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fbn_prune._runtime.dtypes import DTYPES
from fbn_prune.config.limits import _limit_value, parse_limit
from fbn_prune.config.recipe import Recipe
from fbn_prune.errors import UserError
from fbn_prune.evaluate import paired


@dataclass
class EvalSettings:
    """Everything that makes the two evaluations identical. The same object drives both models.

    Attributes:
        tasks: lm-eval task/group/tag names, YAML paths, or ``ppl:FILE`` (perplexity of a local
            .txt file, paragraphs separated by blank lines, or a .jsonl file with a "text" field).
        limit: documents per task: a count (int >= 1), a fraction of the task (0 < float < 1), or
            None for all. The first documents are used, as with lm-eval's ``--limit``.
        task_limits: per-task overrides of ``limit`` (task or requested name -> count or fraction).
        num_fewshot: few-shot examples; None keeps each task's default (0 for the standard tasks).
        batch_size: requests per forward pass (an int; the same for both models).
        max_length: context length for lm-eval (rolling windows, truncation); None: the model's.
        device: "auto", "cpu", "cuda", "cuda:1", ...
        dtype: float32, bfloat16 or float16; both models are evaluated in it.
        include_path: extra folders of task YAMLs.
        data_dir: the local data folder (see :func:`fbn_prune.texts.tasks.data_dir`).
        bootstrap_iters: bootstrap draws for the standard error of non-mean metrics (lambada
            perplexity); mean metrics (acc, acc_norm) have a closed-form standard error.
        cache: reuse cached results (per-document ones included) of a model already evaluated with
            these settings (False: evaluate again; the fresh results still replace the cached ones).
        paired_iters: bootstrap resamples of the documents for the paired intervals.
        paired_seed: seed of those resamples (the same documents are drawn for every model).
    """

    tasks: list[str]
    limit: int | float | None = None
    task_limits: dict[str, int | float] = field(default_factory=dict)
    num_fewshot: int | None = None
    batch_size: int = 8
    max_length: int | None = None
    device: str = "auto"
    dtype: str = "float32"
    include_path: list[str] = field(default_factory=list)
    data_dir: str | None = None
    bootstrap_iters: int = 1000
    cache: bool = True
    paired_iters: int = paired.DEFAULT_ITERS
    paired_seed: int = paired.DEFAULT_SEED

    @classmethod
    def from_recipe(cls, recipe: Recipe, *, tasks: list[str] | None = None, limit: list[str] | None = None,
                    batch_size: int | None = None, include_path: list[str] | None = None) -> EvalSettings:
        """The settings of ``recipe``'s evaluation section, on its device and data folder, in ``evaluation.dtype``
        (else the working dtype). The keywords, when given and not empty, replace the section's values (a
        command's flags). Raises UserError for a bad limit."""
        e = recipe.evaluation
        default, per_task = parse_limit(list(limit or []) or e.limit)
        return cls(tasks=list(tasks or e.tasks), limit=default, task_limits=per_task, num_fewshot=e.num_fewshot,
                   batch_size=batch_size or e.batch_size, max_length=e.max_length, device=recipe.device,
                   dtype=e.dtype or recipe.dtype, include_path=list(include_path or e.include_path),
                   data_dir=recipe.data_dir)

    def check(self) -> None:
        """Raise UserError for values lm-eval would reject later (or silently misread)."""
        if not [t for t in self.tasks if str(t).strip()]:
            raise UserError("no task given; name lm-eval tasks with --tasks (e.g. piqa,arc_easy,wikitext).")
        for value in [self.limit, *self.task_limits.values()]:
            if value is not None:
                _limit_value(str(value), str(value))
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise UserError(f"--num-fewshot must be >= 0, got {self.num_fewshot}.")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}.")
        if self.max_length is not None and self.max_length < 2:
            raise UserError(f"--max-length must be >= 2, got {self.max_length}.")
        if self.dtype not in DTYPES:
            raise UserError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}.")
        if self.bootstrap_iters < 0:
            raise UserError(f"bootstrap iterations must be >= 0, got {self.bootstrap_iters}.")
        if self.paired_iters < 100:
            raise UserError(f"paired bootstrap resamples must be >= 100, got {self.paired_iters}.")
