"""The paired method table for the docs from `benchmarks/methods_paired.sh` reports.

    python benchmarks/methods_table.py /tmp/methods-paired/report-task-0.2 /tmp/methods-paired/report-task-0.3 ...

Reads each report's eval.json (one `fbn-prune eval --pruned A --pruned B ...` run: every model on the
same documents) and prints, per ratio and metric, each model's score and the paired difference of
every pair of methods with its 95% bootstrap interval and McNemar's exact p. A difference counts
as a win only where the interval excludes zero (bold).
"""

from __future__ import annotations

import json
import sys
from itertools import combinations
from pathlib import Path


def fmt(x: float, points: bool) -> str:
    return f"{100 * x:.1f}" if points else f"{x:.2f}"


def signed(x: float, points: bool) -> str:
    text = f"{100 * x:+.1f}" if points else f"{x:+.2f}"
    return "±" + text[1:] if float(text) == 0 else text


def pval(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def table(report: Path) -> list[str]:
    d = json.loads((report / "eval.json").read_text())
    methods = {p["label"]: p["method"] + ("" if p["layout"] == "uniform" else f" ({p['layout']})") for p in d["pruned"]}
    if len(set(methods.values())) < len(methods):  # the same method twice (e.g. healed): name by folder
        methods = {label: label for label in methods}
    ratio = {p["label"]: p["achieved_ratio"] for p in d["pruned"]}
    removed = sorted(set(round(100 * r, 1) for r in ratio.values()))
    counts = {p["task"]: p["n"] for p in d["pairs"]}
    docs = ", ".join(f"{k} {v}" for k, v in counts.items())
    lines = [f"### {'/'.join(f'{r}%' for r in removed)} of FFN channels removed ({docs} documents, "
             f"{d['settings']['dtype']})", ""]
    labels = list(methods)
    lines.append("| metric | original | " + " | ".join(methods[x] for x in labels) + " | "
                 + " | ".join(f"{methods[a]} - {methods[b]}" for a, b in combinations(labels, 2)) + " |")
    lines.append("|---|---:|" + "---:|" * len(labels) + "---|" * len(list(combinations(labels, 2))))
    for m in d["metrics"]:
        pts = m["points"]
        cells = [f"{m['task']} {m['metric']}", fmt(m["values"]["original"], pts)
                 + (f" ± {100 * m['stderr']['original']:.1f}" if pts and m["stderr"]["original"] else "")]
        for x in labels:
            err = m["stderr"].get(x)
            cells.append(fmt(m["values"][x], pts) + (f" ± {100 * err:.1f}" if pts and err else ""))
        for a, b in combinations(labels, 2):
            pair = next(p for p in d["pairs"] if (p["task"], p["metric"], p["a"], p["b"]) == (m["task"], m["metric"], a, b))
            # eval.json holds b - a; the table shows a - b (the first-named method minus the other)
            text = (f"{signed(-pair['delta'], pts)} [{signed(-pair['delta_high'], pts)}, {signed(-pair['delta_low'], pts)}]"
                    + (f", p {pval(pair['mcnemar_p'])}" if pair["mcnemar_p"] is not None else ""))
            cells.append(f"**{text}**" if pair["significant"] else text)
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


if __name__ == "__main__":
    for folder in sys.argv[1:]:
        print("\n".join(table(Path(folder))))
