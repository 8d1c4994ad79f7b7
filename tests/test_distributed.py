"""Data parallelism over real MPI (2 ranks launched with the venv's mpiexec, each with a timeout so a hang
fails): the 2-rank weights equal a 1-process run over the same global batches, every rank holds the same
weights after every step, a rank that raises ends the whole job with its error; DistributedSampler
partitions as torch's does; `excite train --distributed` writes its checkpoints from rank 0 only."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import excite as ex
import excite.nn.functional as F
from excite.distributed import DistributedSampler

pytest.importorskip("mpi4py")
TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
TIMEOUT = 240  # generous: a cold numba cache compiles the training kernels in both ranks at once


def _mpiexec():
    from excite.app.launch import find_mpiexec

    path = find_mpiexec()
    if path is None:
        if os.environ.get("EXCITE_REQUIRE_ORACLE") == "1":
            pytest.fail("mpiexec not found (pip install 'excite[distributed]' brings it)")
        pytest.skip("mpiexec not found")
    return path


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS, os.environ.get("PYTHONPATH", "")]),
                EXCITE_NUM_THREADS="1", OMP_NUM_THREADS="1")


def _run_ranks(args, cwd, n=2):
    return subprocess.run([_mpiexec(), "-n", str(n), *args], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT, stdin=subprocess.DEVNULL)


# ----- DistributedSampler against torch's ---------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 10, 11])
@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_without_shuffle_equals_torch(torch, n, replicas, drop_last):
    from torch.utils.data.distributed import DistributedSampler as TorchSampler

    data = list(range(n))
    if drop_last and n < replicas:
        return  # torch gives empty shares there too; covered by the length check below
    for rank in range(replicas):
        ours = DistributedSampler(data, num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last)
        theirs = TorchSampler(data, num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)


@pytest.mark.parametrize("n", [5, 10, 11])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_shuffled_follows_torchs_partitioning(torch, n, drop_last):
    from torch.utils.data.distributed import DistributedSampler as TorchSampler

    replicas, data = 3, list(range(n))
    ours = [DistributedSampler(data, replicas, r, shuffle=True, seed=4, drop_last=drop_last) for r in range(replicas)]
    theirs = [TorchSampler(data, replicas, r, shuffle=True, seed=4, drop_last=drop_last) for r in range(replicas)]
    shares = [list(s) for s in ours]
    assert [len(s) for s in shares] == [len(list(t)) for t in theirs] == [len(s) for s in ours]
    flat = [i for s in shares for i in s]
    if drop_last:
        assert len(set(flat)) == len(flat) == replicas * (n // replicas), "disjoint, the uneven tail dropped"
    else:
        assert set(flat) == set(data), "every index is somewhere"
        # the padding repeats the permutation's first indices, exactly torch's rule
        order = [shares[k % replicas][k // replicas] for k in range(len(flat))]
        assert order[n:] == order[:len(flat) - n] and sorted(order[:n]) == data
    # every rank draws the same permutation: interleaving the shares gives it back
    again = [list(DistributedSampler(data, replicas, r, shuffle=True, seed=4, drop_last=drop_last))
             for r in range(replicas)]
    assert again == shares
    for s in ours:
        s.set_epoch(1)
    assert [list(s) for s in ours] != shares, "set_epoch changes the order"


def test_sampler_refuses_a_rank_outside_the_world():
    with pytest.raises(ValueError, match=r"Invalid rank 2, rank should be in the interval \[0, 1\]"):
        DistributedSampler(range(4), num_replicas=2, rank=2)


def test_sampler_feeds_a_dataloader():
    data = ex.data.TensorDataset(ex.tensor(np.arange(10)))
    loader = ex.data.DataLoader(data, batch_size=2, sampler=DistributedSampler(data, 2, 1, shuffle=False))
    assert [b[0].numpy().tolist() for b in loader] == [[1, 3], [5, 7], [9]]


def test_rank_without_init_says_how():
    import excite.distributed as dist

    if not dist.is_initialized():
        with pytest.raises(ex.ExciteError, match="init"):
            dist.rank()


# ----- real MPI ------------------------------------------------------------------------------------------
def _single_process_reference():
    import distributed_worker as w

    data = w.dataset()
    net = w.model(seed=0)
    opt = w.optimizer(net)
    per_rank = [w.rank_batches(data, r) for r in range(w.WORLD)]
    for step in range(w.STEPS):
        images, labels = w.batch(data, [i for r in range(w.WORLD) for i in per_rank[r][step]])
        opt.zero_grad()
        F.cross_entropy(net(images), labels).backward()
        opt.step()
    return net.state_dict()


def test_two_ranks_train_to_the_weights_of_one_process(tmp_path):
    out = str(tmp_path / "result")
    result = _run_ranks([sys.executable, os.path.join(TESTS, "distributed_worker.py"), "train", out], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(open(out + ".json").read())
    assert report["world_size"] == 2
    for r in report["ranks"]:
        assert r["same"] == [True, True, True], "every rank holds the same weights after every step"
        assert r["extra_grad"] == [1.5, 1.5], "used on rank 0 only: (3 + 0) / 2"
        assert r["unused_is_none"]
        assert r["no_sync_local"], "no_sync leaves the gradients unaveraged"
        assert "ranks disagree on the model" in r["mismatch"] and "rank 1: Linear with 12 parameters" in r["mismatch"]
    weights = np.load(out + ".npz")
    reference = _single_process_reference()
    assert list(weights.files) == list(reference)
    for key, value in reference.items():
        # float64; only the order of summation differs (two half-batch means averaged, one mean of all)
        np.testing.assert_allclose(weights[key], value.numpy(), rtol=1e-10, atol=1e-12, err_msg=key)
    changed = _single_process_reference_initial()
    assert any(not np.array_equal(weights[k], changed[k].numpy()) for k in changed), "training moved the weights"


def _single_process_reference_initial():
    import distributed_worker as w

    return w.model(seed=0).state_dict()


def test_a_two_rank_run_stopped_and_resumed_ends_as_one_never_stopped(tmp_path):
    result = _run_ranks([sys.executable, os.path.join(TESTS, "distributed_worker.py"), "resume", str(tmp_path)],
                        tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    straight, resumed = (ex.load(str(tmp_path / name / "last.pth")) for name in ("straight", "stopped"))
    assert resumed["epoch"] == straight["epoch"] == 2
    for key, value in straight["model"].items():
        np.testing.assert_array_equal(resumed["model"][key].numpy(), value.numpy(), err_msg=key)


def test_a_rank_that_raises_ends_the_whole_job_with_its_error(tmp_path):
    result = _run_ranks([sys.executable, os.path.join(TESTS, "distributed_worker.py"), "raise", "-"], tmp_path)
    assert result.returncode != 0
    assert "excite: error: rank 1: rank 1 cannot read its batch" in result.stderr


# ----- the CLI ------------------------------------------------------------------------------------------
def _cli(*args):
    return [sys.executable, "-m", "excite", *args]


def test_cli_distributed_run_saves_once_from_rank_0_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--distributed", "--epochs", "1", "--limit", "64", "--batch-size", "8", "--no-progress",
            "--out", str(out)]
    # --nproc 2 launches the venv's mpiexec itself
    result = subprocess.run(_cli(*args, "--nproc", "2"), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                            timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout
    assert log.count("training mobilenet_v3_digits") == 1, "only rank 0 prints"
    assert "2 ranks: batch 8 per rank, effective batch 16" in log
    assert sorted(os.listdir(out)) == ["best.pth", "last.pth", "metrics.csv", "metrics.json", "run.json"] or \
        sorted(os.listdir(out)) == ["best.pth", "curves.png", "last.pth", "metrics.csv", "metrics.json", "run.json"]
    assert not [p for p in os.listdir(tmp_path) if p not in ("run",)], "no rank wrote anywhere else"
    ckpt = ex.load(str(out / "last.pth"))
    assert ckpt["config"]["world_size"] == 2
    # extending the finished run by one epoch resumes it on the same world
    again = _run_ranks(_cli("train", "--distributed", "--resume", str(out / "last.pth"), "--epochs", "2",
                            "--no-progress"), tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("resuming at epoch 2") == 1
    assert ex.load(str(out / "last.pth"))["epoch"] == 2
    # a different world size is refused, on every rank, with the reason
    alone = subprocess.run(_cli("train", "--distributed", "--resume", str(out / "last.pth"), "--epochs", "3",
                                "--no-progress"), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert alone.returncode == 1 and "2 ranks" in alone.stderr and "excite: error:" in alone.stderr


def test_without_mpi4py_the_error_names_the_extra(monkeypatch, capsys):
    import excite.distributed as dist
    from excite.app.cli import main

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if not installed
    monkeypatch.setattr(dist, "_comm", None)
    assert main(["train", "--distributed", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("excite: error:") and 'pip install "excite[distributed]"' in err


def test_nproc_without_mpiexec_says_what_to_install(monkeypatch, capsys):
    from excite.app import launch
    from excite.app.cli import main

    monkeypatch.setattr(launch, "find_mpiexec", lambda: None)
    assert main(["train", "--nproc", "2"]) == 1
    assert 'needs mpiexec' in capsys.readouterr().err


def test_ranks_started_with_different_models_are_refused_on_every_rank(tmp_path):
    common = ["train", "--distributed", "--epochs", "1", "--limit", "16", "--no-progress", "--out", str(tmp_path / "r")]
    result = subprocess.run([_mpiexec(), "-n", "1", *_cli(*common), ":", "-n", "1",
                             *_cli(*common, "--model", "mobilenet_v3_small", "--image-size", "32")],
                            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
                            stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert "the ranks disagree on the run" in result.stderr and "model: rank 0 'mobilenet_v3_digits', rank 1 " \
        "'mobilenet_v3_small'" in result.stderr
    assert not (tmp_path / "r").exists()
