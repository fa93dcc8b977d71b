"""torch.distributed: `torchrun --nproc-per-node 2 -m fbn_prune prune` on the CPU (gloo) against one process.

Two processes must give the same kept channels and byte-identical weights as one (docs/scale-out.md says
why), and the same networks artifact (statistics, Gram matrices, ICA maps) byte for byte. A rank that is
killed stops the run with one line naming it; the rerun resumes from the finished files and still matches.
Real processes on a tiny model: each torchrun costs two interpreter starts (5-10 s).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fbn_prune._runtime import world

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--calib-samples", "24", "--seq-len", "48", "--runs", "3", "--components", "4", "--batch-size", "4",
        "--no-progress", "--device", "cpu"]


def run(args: list[str], cache: Path, nproc: int = 0, **env_extra: str) -> subprocess.CompletedProcess:
    """``python -m fbn_prune ARGS`` (nproc 0), or the same under ``torchrun --nproc-per-node NPROC``."""
    env = {**os.environ, "FBN_PRUNE_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **env_extra}
    for key in ("FBN_PRUNE_TEST_KILL_AT", "FBN_PRUNE_TEST_KILL_RANK", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        if key not in env_extra:
            env.pop(key, None)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--standalone",
              "--max-restarts", "0"] if nproc else [sys.executable]
    return subprocess.run([*launch, "-m", "fbn_prune", *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=600)


def weights(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.safetensors"))}


def kept(folder: Path) -> dict:
    return json.loads((folder / "fbn_prune.json").read_text())["kept"]


def artifact_files(folder: Path) -> dict[str, bytes]:
    """Every file of a networks artifact that its ranks compute (not the metadata with its timings)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.safetensors"))}


@pytest.fixture(scope="module")
def one_process(tiny_dir, calib_txt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "pruned"
    r = run(["prune", tiny_dir("llama"), "--out", out, "--calib", calib_txt, "--ratio", "0.25", *ARGS],
            tmp_path_factory.mktemp("cache1"))
    assert r.returncode == 0, r.stderr
    return out


def test_two_processes_write_the_same_checkpoint(tiny_dir, calib_txt, tmp_path, one_process):
    out = tmp_path / "pruned"
    r = run(["prune", tiny_dir("llama"), "--out", out, "--calib", calib_txt, "--ratio", "0.25", *ARGS],
            tmp_path / "cache", nproc=2)
    assert r.returncode == 0, r.stderr
    assert weights(out) == weights(one_process)
    assert kept(out) == kept(one_process)
    assert r.stdout.count("verification   passed") == 1  # rank 0 reports; rank 1 prints nothing
    assert not any((tmp_path / "cache").rglob("*.f16"))  # the capture went with the networks cache


def test_networks_artifact_is_the_same_bytes(tiny_dir, calib_txt, tmp_path):
    """Statistics and Gram matrices summed along the ranks, maps computed by either rank: same bytes."""
    common = ["networks", tiny_dir("llama"), "--calib", calib_txt, *ARGS]
    r1 = run([*common, "--out", tmp_path / "one"], tmp_path / "c1")
    r2 = run([*common, "--out", tmp_path / "two"], tmp_path / "c2", nproc=2)
    assert r1.returncode == 0 and r2.returncode == 0, r1.stderr + r2.stderr
    one, two = artifact_files(tmp_path / "one"), artifact_files(tmp_path / "two")
    assert sorted(one) == sorted(two) and len(one) > 10
    assert one == two
    assert r2.stdout.count("networks:") == 1
    assert not (tmp_path / "two" / "capture").exists()


def test_a_killed_rank_stops_the_run_in_one_line_and_the_rerun_resumes(tiny_dir, calib_txt, tmp_path, one_process):
    out, cache = tmp_path / "pruned", tmp_path / "cache"
    cmd = ["prune", tiny_dir("llama"), "--out", out, "--calib", calib_txt, "--ratio", "0.25", *ARGS]
    r = run(cmd, cache, nproc=2, FBN_PRUNE_TEST_KILL_AT="decompose", FBN_PRUNE_TEST_KILL_RANK="1")
    assert r.returncode != 0
    ours = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(ours) == 1, r.stderr
    assert "rank 1 of 2 stopped" in ours[0] and "Rerun the same command" in ours[0]
    assert not out.exists()
    maps = list(cache.rglob("maps/*.safetensors"))
    assert maps  # finished ICA jobs are kept
    r = run(cmd, cache, nproc=2)
    assert r.returncode == 0, r.stderr
    assert weights(out) == weights(one_process)


def test_a_rank_error_is_printed_once(tiny_dir, tmp_path):
    """Bad input, met alike by every rank before they join: one line, from rank 0."""
    r = run(["prune", tiny_dir("llama"), "--out", tmp_path / "x", "--calib", tmp_path / "missing.txt", *ARGS],
            tmp_path / "cache", nproc=2)
    ours = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode != 0 and len(ours) == 1, r.stderr
    assert "missing.txt" in ours[0]


def test_one_process_commands_refuse_torchrun(tiny_dir, tmp_path):
    r = run(["heal", tiny_dir("llama"), "--out", tmp_path / "h"], tmp_path / "cache", nproc=2)
    ours = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode != 0 and len(ours) == 1 and "runs in one process" in ours[0], r.stderr


def test_a_rank_other_than_0_leaves_a_shared_error_to_rank_0(monkeypatch, capsys):
    """torchrun stops every rank once one exits: rank 1 must not exit before rank 0 has printed the error they
    share (CI once lost rank 0's line that way). It waits; when nothing stops it, the error was its own."""
    from fbn_prune.cli.main import cli

    waited = []
    monkeypatch.setattr(world, "SHARED_ERROR_GRACE_S", 0.0)
    monkeypatch.setattr(world.time, "sleep", waited.append)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    code = cli.main(["heal", "x", "--out", "y"], standalone_mode=False)
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and waited == [0.0]
    assert len(err) == 1 and err[0].startswith("error: rank 1 of 2: `fbn-prune heal` runs in one process"), err
    monkeypatch.setenv("RANK", "0")  # rank 0 says it at once
    waited.clear()
    code = cli.main(["heal", "x", "--out", "y"], standalone_mode=False)
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and waited == [] and err[0].startswith("error: `fbn-prune heal` runs in one process"), err


def test_world_of_one_process_is_the_identity():
    w = world.current()
    assert (w.rank, w.size, w.main, w.distributed) == (0, 1, True, False)
    parts = [torch.full((2, 2), 0.1, dtype=torch.float64) * k for k in range(5)]
    expected = torch.zeros(2, 2, dtype=torch.float64)
    for p in parts:
        expected += p
    assert torch.equal(world.ordered_sum(iter(parts), (2, 2), "test"), expected)
    assert world.on_main(lambda: 7) == 7 and world.broadcast("x", "test") == "x" and world.all_ok(True, "test")


def test_blocks_and_shares_cover_every_item_once():
    for size in (1, 2, 3, 5):
        for n in (0, 1, 2, 4, 7, 80):
            blocks = [list(world.World(k, size).block(n)) for k in range(size)]
            assert sum(blocks, []) == list(range(n))  # contiguous, in rank order: sums in run order
            shares = [[j for j in range(n) if world.World(k, size).mine(j)] for k in range(size)]
            assert sorted(sum(shares, [])) == list(range(n))


def test_accelerate_launch_writes_the_same_checkpoint(tiny_dir, calib_txt, tmp_path, one_process):
    out = tmp_path / "pruned"
    env = {**os.environ, "FBN_PRUNE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu", "-m", "fbn_prune", "prune",
           str(tiny_dir("llama")), "--out", str(out), "--calib", str(calib_txt), "--ratio", "0.25", *ARGS]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert weights(out) == weights(one_process)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_without_a_shared_folder_stop_before_the_capture(tiny_dir, calib_txt, tmp_path):
    """Two torchrun "nodes" on this machine, each with its own networks cache: one line per node, nothing captured."""
    port = str(_free_port())
    procs = []
    for node in (0, 1):
        env = {**os.environ, "FBN_PRUNE_CACHE": str(tmp_path / f"cache{node}"), "HF_HUB_OFFLINE": "1",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank",
               str(node), "--master-addr", "127.0.0.1", "--master-port", port, "-m", "fbn_prune", "prune",
               str(tiny_dir("llama")), "--out", str(tmp_path / "out"), "--calib", str(calib_txt), *ARGS]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for node, p in enumerate(procs):
        _, err = p.communicate(timeout=600)
        ours = [line for line in err.splitlines() if line.startswith("error:")]
        assert p.returncode != 0 and len(ours) == 1, err
        assert f"rank {node} of 2" in ours[0] and "shares" in ours[0]
    assert not list(tmp_path.rglob("*.f16"))


def test_selection_does_not_depend_on_the_thread_count():
    """torchrun gives each rank one thread; one process has all the cores. LAPACK's last bits depend on the
    thread count, so elimination and compensation factorize on one thread (threads.lapack_threads)."""
    from fbn_prune.select.compensate import predictor
    from fbn_prune.select.eliminate import elimination_scores

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3072, 1536, generator=gen, dtype=torch.float64)
    g, cols = x.T @ x / 3072, torch.randn(1536, 64, generator=gen, dtype=torch.float64)
    keep = torch.arange(0, 1536, 2)
    before = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append((elimination_scores(g, cols, block=256), predictor(g, keep)))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
