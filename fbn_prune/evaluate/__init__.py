"""Original vs pruned through lm-evaluation-harness, and the report.

Data flow: :mod:`~fbn_prune.evaluate.settings` (EvalSettings) -> :mod:`~fbn_prune.evaluate.compare`
(orchestration) which loads the tasks and runs lm-eval through :mod:`~fbn_prune.evaluate.harness`
(``ppl:FILE`` tasks from :mod:`~fbn_prune.evaluate.ppl`), the models through
:mod:`~fbn_prune.evaluate.loading`, and reuses :mod:`~fbn_prune.evaluate.cache` -> a
:class:`~fbn_prune.evaluate.record.Comparison` -> :mod:`~fbn_prune.evaluate.report` builds the
:class:`~fbn_prune.evaluate.record.EvalRecord` (metric rows from :mod:`~fbn_prune.evaluate.rows`, paired
statistics from :mod:`~fbn_prune.evaluate.paired`, the gate from :mod:`~fbn_prune.evaluate.gating`) and
writes eval.json, eval.md (:mod:`~fbn_prune.evaluate.render`), eval-docs.jsonl and the model card.
"""
