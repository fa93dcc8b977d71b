"""``fbn-prune eval``: original vs pruned through lm-eval, a report, and a gate a pipeline can act on.

Also :func:`evaluate_after_prune`, which ``fbn-prune prune --eval-tasks ...`` calls after export.
Exit codes: 0 ok (gate held or no gate), 2 bad input, 3 gate failed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from fbn_prune._runtime.dtypes import DTYPE_NAMES
from fbn_prune.config.gate import Gate
from fbn_prune.config.limits import parse_limit
from fbn_prune.errors import GateFailed, UserError
from fbn_prune.evaluate import compare, render
from fbn_prune.evaluate.harness import task_manager
from fbn_prune.evaluate.ppl import PPL_PREFIX, ppl_task
from fbn_prune.evaluate.record import DOCS_FILE, ComparisonRecord, EvalRecord
from fbn_prune.evaluate.settings import EvalSettings
from fbn_prune.texts.tasks.manager import resolve_tasks


def _quiet_harness(verbose: int) -> None:
    """lm-eval logs every step at INFO and chats at WARNING; keep that for -v."""
    if verbose == 0:
        logging.getLogger("lm_eval").setLevel(logging.ERROR)


def _tasks(tasks: str | None, ppl: tuple[str, ...]) -> list[str]:
    names = [t.strip() for t in (tasks or "").split(",") if t.strip()]
    return names + [f"ppl:{p}" for p in ppl]


def _finish(record: EvalRecord | ComparisonRecord, report_dir: Path) -> None:
    """Print the table and where the report is; raise GateFailed (exit 3) when the gate did not hold
    (for several checkpoints: when it did not hold for one of them)."""
    many = isinstance(record, ComparisonRecord)
    click.echo(render.table_many(record) if many else render.table(record))
    click.echo(f"\nreport: {report_dir / 'eval.json'}, {report_dir / 'eval.md'}, {report_dir / DOCS_FILE}")
    gates = [g for g in record.gates if g] if many else [record.gate] if record.gate else []
    failed = [g for g in gates if not g["passed"]]
    for g in gates:
        if g["passed"]:
            click.echo((f"{g['pruned']}: " if many else "") + g["summary"])
    if failed:
        text = "; ".join((f"{g['pruned']}: " if many else "") + g["summary"] for g in failed)
        raise GateFailed(f"{text} (see {report_dir / 'eval.md'})")


@click.command("eval")
@click.option("--base", type=str, metavar="MODEL",
              help="The original model: Hub id, local folder, .gguf file or `smollm2` "
                   "[the base model recorded in the checkpoint's fbn_prune.json].")
@click.option("--pruned", required=True, multiple=True, type=str, metavar="DIR",
              help="A pruned fbn_prune checkpoint folder. Repeat it to compare several checkpoints on the same "
                   "documents (the original is evaluated once; needs --out).")
@click.option("--tasks", type=str, metavar="LIST",
              help="Comma-separated lm-eval tasks, groups, tags or task YAML paths; ppl:FILE for the perplexity "
                   "of a local text file. Offline: piqa, arc_easy, lambada_openai, wikitext read --data-dir.")
@click.option("--ppl", multiple=True, metavar="FILE",
              help="Also measure the perplexity of this text file (.txt: documents separated by blank lines; "
                   ".jsonl: a \"text\" field per line), as ppl:FILE in --tasks does. Repeatable.")
@click.option("--limit", multiple=True, metavar="N",
              help="Documents per task (the first N): a count, a fraction below 1, or TASK=N; comma-separated "
                   "or repeated, e.g. --limit 300,wikitext=3 [all].")
@click.option("--num-fewshot", type=int, metavar="K", help="Few-shot examples [each task's default: 0 for the standard tasks].")
@click.option("--batch-size", type=int, default=8, show_default=True, metavar="B", help="Requests per forward pass, both models.")
@click.option("--max-length", type=int, metavar="N", help="Context length for lm-eval (perplexity windows) [the model's].")
@click.option("--max-drop", type=float, metavar="POINTS",
              help="Gate: exit 3 when an accuracy-type metric (acc, acc_norm, ...) falls more than POINTS "
                   "percentage points below the original.")
@click.option("--min-retention", type=float, metavar="FRACTION",
              help="Gate: exit 3 when a metric keeps less than FRACTION of the original "
                   "(pruned/original; original/pruned for perplexity and bits per byte).")
@click.option("--gate-metrics", type=str, metavar="LIST", help="Gate only these metrics, e.g. acc_norm,word_perplexity [all].")
@click.option("--gate-on", type=click.Choice(["point", "ci"]), default="point", show_default=True,
              help="point: gate the measured values; ci: gate the pessimistic bound of the 95% paired interval "
                   "(the drop or retention the data cannot rule out).")
@click.option("--any-base", is_flag=True,
              help="Compare with a --base the checkpoint was not pruned from; the report goes to --out only, "
                   "nothing is written into the checkpoint.")
@click.option("--out", "-o", "out", type=str, metavar="REPORT_DIR", help="Folder for eval.json and eval.md [the pruned checkpoint].")
@click.option("--include-path", multiple=True, metavar="DIR", help="A folder of extra lm-eval task YAMLs (repeatable).")
@click.option("--data-dir", type=str, metavar="DIR",
              help="Data folder of the local tasks and of data:FILE names [$FBN_PRUNE_DATA].")
@click.option("--device", type=str, default="auto", show_default=True, metavar="DEV", help="auto, cpu, cuda, cuda:1 ...")
@click.option("--dtype", type=click.Choice(DTYPE_NAMES), default="float32", show_default=True,
              help="Both models are evaluated in this dtype.")
@click.option("--no-cache", is_flag=True, help="Evaluate the original model again instead of reusing its cached results.")
@click.option("--no-card", is_flag=True, help="Leave the checkpoint's README.md and fbn_prune.json as they are.")
@click.pass_context
def eval_command(ctx, base, pruned, tasks, ppl, limit, num_fewshot, batch_size, max_length, max_drop, min_retention,
                 gate_metrics, gate_on, any_base, out, include_path, data_dir, device, dtype, no_cache, no_card):
    """Evaluate the original and the pruned model with lm-eval (same tasks, same settings, one run),
    write eval.json, eval.md and eval-docs.jsonl, add the table and Hub model-index to the checkpoint's
    model card, and gate on the result. Both models answer the same documents: each difference comes
    with a paired 95% bootstrap interval and, for accuracy, McNemar's exact test.

    \b
    Examples:
      fbn-prune eval --base smollm2 --pruned smollm2-pruned --tasks piqa,arc_easy,wikitext --limit 300,wikitext=3
      fbn-prune eval --pruned out --tasks arc_easy --ppl notes.txt --max-drop 2
      fbn-prune eval --pruned out --tasks piqa --min-retention 0.95 --out reports/run7
      fbn-prune eval --pruned out --tasks arc_easy --max-drop 2 --gate-on ci
      fbn-prune eval --base smollm2 --pruned fbn20 --pruned flap20 --tasks arc_easy --limit 200 --out cmp

    \b
    Exit codes: 0 ok (gate held, or no gate), 2 bad input (also: --base is not the model the
    checkpoint was pruned from, without --any-base), 3 gate failed.
    """
    _quiet_harness((ctx.obj or {}).get("verbose", 0))
    gate = Gate.make(max_drop, min_retention, gate_metrics, gate_on)
    default, per_task = parse_limit(list(limit) or None)
    settings = EvalSettings(
        tasks=_tasks(tasks, ppl), limit=default, task_limits=per_task, num_fewshot=num_fewshot,
        batch_size=batch_size, max_length=max_length, device=device, dtype=dtype, include_path=list(include_path),
        data_dir=data_dir, cache=not no_cache,
    )
    settings.check()
    targets = list(pruned) if len(pruned) > 1 else pruned[0]
    record = compare.run(base, targets, settings, gate=gate, out=out, update_card=not no_card, any_base=any_base)
    _finish(record, Path(out or pruned[0]).expanduser())


def check_after_prune(recipe) -> None:
    """Check ``prune --eval-tasks`` before any work: settings, task names (with the data folder the local
    tasks need) and ppl: files. Raises UserError; the tasks' datasets are loaded later, by the evaluation."""
    settings = EvalSettings.from_recipe(recipe)
    settings.check()
    names = []
    for raw in settings.tasks:
        if raw.startswith(PPL_PREFIX):
            ppl_task(raw, settings.data_dir)
        elif any(ch in raw for ch in "*?["):
            raise UserError(f"task pattern {raw!r}: name the tasks one by one (patterns are not expanded here).")
        else:
            names.append(raw)
    if names:
        resolve_tasks(names, task_manager(settings.include_path, settings.data_dir))


def evaluate_after_prune(recipe, checkpoint: Path, verbose: int = 0) -> None:
    """Run the recipe's ``evaluation`` section on a freshly exported checkpoint (``prune --eval-tasks``).

    Raises GateFailed (exit 3) when the gate does not hold; the checkpoint stays where it is.
    """
    e = recipe.evaluation
    _quiet_harness(verbose)
    gate = Gate.make(e.max_drop, e.min_retention, on=e.gate_on)
    settings = EvalSettings.from_recipe(recipe)
    click.echo(f"\nevaluating original vs pruned on {', '.join(settings.tasks)} ...", err=True)
    record = compare.run(recipe.model, checkpoint, settings, gate=gate, out=checkpoint)
    _finish(record, checkpoint)
