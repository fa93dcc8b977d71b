"""Scale and speed on tiny models: RAM budget, dry-run plan, parallel and resumed ICA jobs, ICA device,
accelerate placement (device_map, offloaded weights), and the GPU benchmark's CPU smoke test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from clitools import bad, run

from fbn_prune import find_networks, pipeline
from fbn_prune._runtime import resources as res  # noqa: E402
from fbn_prune._runtime import sizes  # noqa: E402
from fbn_prune._runtime.devices import gram_device, selection_device
from fbn_prune.errors import UserError
from fbn_prune.decompose.networks import Networks
from fbn_prune.config.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--calib-samples", "24", "--seq-len", "64", "--runs", "2", "--components", "8", "--no-progress", "--device", "cpu"]


def small_recipe(model, calib, **top) -> Recipe:
    return Recipe.from_dict({
        "model": str(model), "device": "cpu", **top,
        "calibration": {"source": str(calib), "samples": 24, "seq_len": 64, "batch_size": 8, "holdout": 2},
        "decomposition": {"runs": 2, "components": 8, "max_iter": 100},
        "selection": {"ratio": 0.25, "round_to": 8, "min_width": 8},
    })


def all_maps(folder) -> list[torch.Tensor]:
    art = Networks(folder)
    return [art.maps(i) for i in range(art.n_layers)]


# ---- sizes and budgets --------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [("4GB", 4 * 10**9), ("4GiB", 4 * 2**30), ("512MB", 512 * 10**6),
                                           ("1.5G", 1_500_000_000), ("123", 123), (2048, 2048)])
def test_parse_size(text, expected):
    assert sizes.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "-1GB", "4 parsecs", "0"])
def test_parse_size_refuses(text):
    with pytest.raises(UserError, match="size such as|positive"):
        sizes.parse_size(text)


def test_batch_under_budget():
    assert res.batch_under_budget(10_000, 1_000, 10, 100, 8) == 8  # room for 9 documents, 8 asked
    assert res.batch_under_budget(4_500, 1_000, 10, 100, 8) == 3
    with pytest.raises(UserError, match="below what the capture needs"):
        res.batch_under_budget(1_500, 1_000, 10, 100, 8)


def test_max_ram_below_model_is_one_line(tiny_dir, calib_txt, tmp_path):
    r = bad(["networks", tiny_dir("llama"), "--out", tmp_path / "net", "--calib", calib_txt, "--max-ram", "100MB", *SMALL],
            "below what the capture needs")
    assert "--max-ram" in r.output and len(r.output.strip().splitlines()) == 1
    bad(["networks", tiny_dir("llama"), "--out", tmp_path / "n2", "--calib", calib_txt, "--max-ram", "lots", *SMALL],
        "size such as")


def test_max_ram_lowers_the_batch_and_keeps_the_signal(tiny_dir, calib_txt, tmp_path, monkeypatch):
    """A budget with room for two documents: batches of 2 instead of 8, same signals (to rounding)."""
    r = small_recipe(tiny_dir("llama"), calib_txt)
    bundle = pipeline._load(r)
    full = pipeline.networks(r, tmp_path / "a", model_bundle=bundle, progress=False, keep_capture=True)
    monkeypatch.setattr(res, "current_rss", lambda: 10**9)
    from fbn_prune.plan import model_shape

    _, model, _ = bundle
    widths = [96] * 4
    per_doc = res.capture_bytes_per_token(model_shape(model.config, widths, model.num_parameters(), "float32"), 64, True) * 64
    budget = r.override({"calibration.max_ram": str(10**9 + int(2.5 * per_doc))})
    from fbn_prune.models.arch import adapter_for

    assert find_networks.capture_batch(budget, model, adapter_for(model.config)) == 2
    small = pipeline.networks(budget, tmp_path / "b", model_bundle=bundle, progress=False, keep_capture=True)
    from fbn_prune.capture.activations import CaptureIndex

    a, b = CaptureIndex.open(tmp_path / "a" / "capture"), CaptureIndex.open(tmp_path / "b" / "capture")
    assert a.run_offsets == b.run_offsets
    for i in range(4):
        torch.testing.assert_close(torch.from_numpy(b.signal(i)[:]).float(), torch.from_numpy(a.signal(i)[:]).float(),
                                   atol=2e-3, rtol=2e-3)
    assert full.meta.calibration == small.meta.calibration


def test_not_enough_disk_is_refused_before_capture(tiny_dir, calib_txt, tmp_path, monkeypatch):
    monkeypatch.setattr(res, "free_disk", lambda path: 1000)
    with pytest.raises(UserError, match="of disk in"):
        pipeline.networks(small_recipe(tiny_dir("llama"), calib_txt), tmp_path / "net", progress=False)
    assert not (tmp_path / "net" / "capture").exists()


# ---- dry run ------------------------------------------------------------------------------------


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_dir, calib_txt, tmp_path):
    model = tiny_dir("llama")
    net = tmp_path / "net"
    r = run("networks", model, "--out", net, "--calib", calib_txt, *SMALL, "--dry-run")
    assert r.exit_code == 0, r.output
    assert not net.exists()
    r2 = run("prune", model, "--out", tmp_path / "o", "--calib", calib_txt, *SMALL, "--dry-run", "--jobs", "2")
    assert r2.exit_code == 0, r2.output
    assert not (tmp_path / "o").exists()

    run("networks", model, "--out", net, "--calib", calib_txt, *SMALL)  # the real run: same tokens as planned
    meta = json.loads((net / "networks.json").read_text())
    tokens = meta["calibration"]["tokens"]
    disk = tokens * sum(meta["widths"]) * 2
    for out in (r.output, r2.output):
        assert f"{tokens:,} tokens" in out
        assert f"{disk:,} bytes" in out
        for word in ("4 FFN layers x 96 channels", "2 runs x 8 components: 8 ICA jobs", "free", "RAM", "time",
                     "selection"):
            assert word in out, word
    assert "2 at a time" in r2.output


def test_dry_run_of_generated_calibration_estimates(tiny_dir, tmp_path):
    r = run("networks", tiny_dir("gpt2"), "--out", tmp_path / "net", "--calib", "generated", *SMALL, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "at most 1,536 (self-generated text, estimated)" in r.output
    assert not (tmp_path / "net").exists()


def test_dry_run_with_too_small_budget_fails_early(tiny_dir, calib_txt, tmp_path):
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", "--calib", calib_txt, "--max-ram", "200MB", *SMALL,
         "--dry-run"], "below what the capture needs")


# ---- parallel, resumable ICA jobs ---------------------------------------------------------------


def test_jobs_give_the_same_maps(tiny_dir, calib_txt, tmp_path):
    r = small_recipe(tiny_dir("llama"), calib_txt)
    bundle = pipeline._load(r)
    one = pipeline.networks(r, tmp_path / "one", model_bundle=bundle, progress=False)
    two = pipeline.networks(r.override({"decomposition.jobs": 2}), tmp_path / "two", model_bundle=bundle, progress=False)
    for a, b in zip(all_maps(one.folder), all_maps(two.folder)):
        assert torch.equal(a, b)


def test_jobs_auto_and_worker_devices(monkeypatch):
    from fbn_prune.decompose import jobs

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert jobs.resolve_jobs("auto", "cuda") == 3 and jobs.resolve_jobs("auto", "cuda:1") == 1
    assert jobs.resolve_jobs("auto", "cpu") == res.cpu_cores() and jobs.resolve_jobs(5, "cpu") == 5
    assert jobs.worker_devices("cuda", 4) == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert jobs.worker_devices("cuda:1", 2) == ["cuda:1", "cuda:1"]
    assert jobs.worker_devices("cpu", 2) == ["cpu", "cpu"]


_SLOW_CHILD = """
import sys, time
import fbn_prune.decompose.maps as maps
real = maps.decompose_job
def slow(*args, **kwargs):  # as if each job were a real layer: time to be killed half-way
    real(*args, **kwargs)
    time.sleep(0.4)
maps.decompose_job = slow
from fbn_prune.cli.entry import main
main(sys.argv[1:])
"""


def test_killed_decomposition_resumes_to_the_same_result(tiny_dir, calib_txt, tmp_path):
    """SIGKILL `fbn-prune networks` once some maps exist; rerunning (with --jobs 2) finishes it, equal to
    an uninterrupted run, and selection keeps the same channels."""
    model = tiny_dir("llama")
    args = ["networks", str(model), "--calib", str(calib_txt), *SMALL, "--runs", "4"]
    net = tmp_path / "killed"
    log = tmp_path / "child.log"
    with open(log, "wb") as err:
        child = subprocess.Popen([sys.executable, "-c", _SLOW_CHILD, *args, "--out", str(net)], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 120
    while len(list((net / "maps").glob("*.safetensors"))) < 3:
        assert child.poll() is None, log.read_text()
        assert time.time() < deadline, "no maps appeared"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = len(list((net / "maps").glob("*.safetensors")))
    assert 3 <= done < 16, done  # killed half-way: 4 layers x 4 runs

    assert run(*args, "--out", net, "--jobs", "2").exit_code == 0
    assert run(*args, "--out", tmp_path / "whole").exit_code == 0
    for a, b in zip(all_maps(net), all_maps(tmp_path / "whole")):
        assert torch.equal(a, b)
    assert not list((net / "maps").glob("*.tmp")) and not (net / "capture").exists()
    kept = []
    for name in ("killed", "whole"):
        assert run("select", tmp_path / name, "--out", tmp_path / f"sel-{name}", "--ratio", "0.5").exit_code == 0
        kept.append(json.loads((tmp_path / f"sel-{name}" / "fbn_prune.json").read_text())["kept"])
    assert kept[0] == kept[1]


# ---- ICA device and option checks ---------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_ica_device_cuda_without_cuda(tiny_dir, calib_txt, tmp_path):
    bad(["networks", tiny_dir("llama"), "--out", tmp_path / "net", "--calib", calib_txt, *SMALL, "--ica-device", "cuda"],
        "CUDA is not available")


def test_ica_device_cpu_matches_default(tiny_dir, calib_txt, tmp_path):
    model = tiny_dir("qwen2")
    args = ["networks", model, "--calib", calib_txt, *SMALL]
    assert run(*args, "--out", tmp_path / "a").exit_code == 0
    assert run(*args, "--out", tmp_path / "b", "--ica-device", "cpu", "--ica-engine", "sklearn").exit_code == 0
    if not torch.cuda.is_available():  # auto is the CPU and scikit-learn here
        for a, b in zip(all_maps(tmp_path / "a"), all_maps(tmp_path / "b")):
            assert torch.equal(a, b)


@pytest.mark.parametrize("flags,fragment", [
    (["--jobs", "0"], "must be >= 1"),
    (["--jobs", "many"], "positive integer or auto"),
    (["--ica-device", "gpu"], "auto, cpu, cuda or cuda:N"),
    (["--max-memory", "70GiB"], "give --device-map auto too"),
    (["--device-map", "auto", "--max-memory", "0=lots"], "size such as"),
    (["--device-map", "auto", "--max-memory", "gpu0=4GB"], "GPU numbers or cpu"),
])
def test_bad_scale_options(tiny_dir, tmp_path, flags, fragment):
    bad(["prune", tiny_dir("llama"), "--out", tmp_path / "o", *flags], fragment)


def test_max_memory_parsing():
    from fbn_prune._runtime.sizes import parse_max_memory

    assert parse_max_memory("0=70GiB, 1=70GiB,cpu=200GB") == {0: 70 * 2**30, 1: 70 * 2**30, "cpu": 200 * 10**9}
    assert parse_max_memory("16GB") == {"gpu": 16 * 10**9}


# ---- accelerate placement -----------------------------------------------------------------------


@pytest.mark.parametrize("device_map", ["auto", "cpu"])
def test_device_map_end_to_end(tiny_dir, calib_txt, tmp_path, device_map):
    """--device-map on a CPU-only machine loads through accelerate and gives the same checkpoint."""
    model = tiny_dir("llama")
    args = ["prune", model, "--calib", calib_txt, "--ratio", "0.25", "--layout", "padded", *SMALL]
    assert run(*args, "--out", tmp_path / "plain").exit_code == 0
    r = run(*args, "--out", tmp_path / "mapped", "--device-map", device_map)
    assert r.exit_code == 0, r.output
    infos = [json.loads((tmp_path / n / "fbn_prune.json").read_text()) for n in ("plain", "mapped")]
    assert infos[1]["verified"] and infos[0]["kept"] == infos[1]["kept"]


def test_offloaded_weights_capture_select_verify(tiny_dir, calib_txt, tmp_path):
    """Every weight offloaded by accelerate (meta parameters, values in its hooks): capture, selection
    and verification still work and agree with the plain model."""
    from accelerate import cpu_offload

    from fbn_prune.models.placement import input_device, offloaded

    r = small_recipe(tiny_dir("llama"), calib_txt).override({"export.layout": "padded"})
    source, model, tok = pipeline._load(r)
    plain = pipeline.networks(r, tmp_path / "n1", model_bundle=(source, model, tok), progress=False)
    out1 = pipeline.select(r.override({"out": str(tmp_path / "o1")}), plain, model_bundle=(source, model, tok))

    _, model2, _ = pipeline._load(r)
    cpu_offload(model2, execution_device=torch.device("cpu"))
    assert offloaded(model2) and input_device(model2) == torch.device("cpu")
    art = pipeline.networks(r, tmp_path / "n2", model_bundle=(source, model2, tok), progress=False)
    for key, value in plain.stats().items():
        torch.testing.assert_close(art.stats()[key], value)
    out2 = pipeline.select(r.override({"out": str(tmp_path / "o2")}), art, model_bundle=(source, model2, tok))
    infos = [json.loads((o / "fbn_prune.json").read_text()) for o in (out1, out2)]
    assert infos[1]["verified"] and infos[0]["kept"] == infos[1]["kept"]
    assert offloaded(model2)  # weights went back to accelerate after selection


# ---- the GPU benchmark's smoke test ---------------------------------------------------------------


def test_gpu_7b_benchmark_tiny():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_7b.py"), "--tiny"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "| capture (" in r.stdout and "| ICA, one job" in r.stdout and "80 runs x 32 layers" in r.stdout
    assert "| selection, one layer" in r.stdout


def test_selection_time_benchmark_runs_the_real_elimination():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "selection_time.py"), "--shapes", "256x32"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    row = r.stdout.strip().splitlines()[-1].split()
    assert row[0] == "256x32" and float(row[2]) > 0


def test_selection_estimate_grows_with_width_and_falls_on_gpu():
    small = res.selection_seconds([1536] * 30, 576, "cpu", eliminate=True, compensate=True)
    big = res.selection_seconds([11008] * 32, 4096, "cpu", eliminate=True, compensate=True)
    gpu = res.selection_seconds([11008] * 32, 4096, "cuda", eliminate=True, compensate=True)
    none = res.selection_seconds([11008] * 32, 4096, "cpu", eliminate=False, compensate=False)
    assert none == 0 and small < big and gpu < big / 100


def test_selection_falls_back_to_the_cpu_when_the_artifacts_gpu_is_absent(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert selection_device("cuda") == "cpu"
    assert selection_device("auto") == "cpu"
    with pytest.raises(UserError):
        gram_device("cuda")  # the networks step itself still refuses a missing GPU
