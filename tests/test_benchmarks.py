"""The quality benchmark's bookkeeping: limits parsing and when a saved cell may be reused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import quality  # noqa: E402


def test_limits_parse_per_calibration():
    assert quality.parse_limits("generic:piqa=200,wikitext=2;task:arc_easy=500") == {
        "generic": {"piqa": 200, "wikitext": 2}, "task": {"arc_easy": 500}}


def test_a_cell_is_reused_only_for_the_same_documents_and_context(tmp_path):
    path = tmp_path / "generic_fbn_0.20.json"
    assert not quality.reusable(path, {"wikitext": 2}, 2048)
    path.write_text(json.dumps({"documents": {"wikitext": 2, "piqa": 150}}))  # made before max_length was saved
    assert quality.reusable(path, {"wikitext": 2, "piqa": 150}, 2048)
    assert not quality.reusable(path, {"wikitext": 10, "piqa": 150}, 2048)
    assert not quality.reusable(path, {"wikitext": 2, "piqa": 150}, 1024)
    path.write_text(json.dumps({"documents": {"wikitext": 2}, "max_length": 1024}))
    assert quality.reusable(path, {"wikitext": 2}, 1024)
