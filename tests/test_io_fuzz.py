"""Mutation fuzzing of the checkpoint reader: every mutant of a valid checkpoint loads as plain data or raises CheckpointError.

The cases are mutants of excite's own checkpoints (zip, legacy, safetensors, and zips whose
data.pkl is mutated and re-zipped with valid CRCs, so the mutations reach the pickle interpreter)
and of torch's. Each runs in a worker process (``io_fuzz_worker``) under a memory limit and a
timeout: a crash, hang or memory blow-up fails the test with a reproducer instead of killing the
run. EXCITE_FUZZ_CASES sets the number of mutants of excite's checkpoints (default 2000, torch's
get half; a nightly job can set 100000), EXCITE_FUZZ_SEED the seed (default 0, as in CI).
Budget: ~12 s.
"""
import collections
import os

import io_fuzz_worker as fuzz_worker
import pytest

CASES = int(os.environ.get("EXCITE_FUZZ_CASES", "2000"))
SEED = int(os.environ.get("EXCITE_FUZZ_SEED", "0"))


def fuzz(kinds, cases, seeds_dir=None):
    """Run ``cases`` mutants split over ``kinds``; fail listing every case that was not a load or a CheckpointError."""
    seeds = fuzz_worker.load_seeds(seeds_dir)
    failures, outcomes = [], {}
    for number, kind in enumerate(kinds):
        count = cases // len(kinds) + (number < cases % len(kinds))
        job = ["--fuzz", kind, "--start", "0", "--stop", str(count), "--seed", str(SEED)]
        results = fuzz_worker.run_isolated(job + (["--seeds", seeds_dir] if seeds_dir else []), count)
        outcomes[kind] = collections.Counter(r["outcome"] if r else "not run" for r in results)
        for index, result in enumerate(results):
            if result is None or result["outcome"] not in ("ok", "checkpoint-error"):
                blob, done = fuzz_worker.make_case(seeds, kind, index, SEED)
                failures.append(f"{kind} case {index}: {result and result['outcome']}\n"
                                f"{fuzz_worker.reproducer(kind, index, SEED, seeds_dir, blob, done)}"
                                f"  detail: {result and result['detail']}")
    assert not failures, f"{len(failures)} fuzz case(s) failed ({dict(outcomes)}):\n" + "\n".join(failures)
    for kind, counts in outcomes.items():  # the mutants reach both sides of the reader
        assert counts["ok"] and counts["checkpoint-error"], (kind, counts)


def test_mutants_of_excite_checkpoints_load_or_raise_checkpoint_error():
    fuzz(fuzz_worker.KINDS, CASES)


def test_mutants_of_torch_checkpoints_load_or_raise_checkpoint_error(torch, tmp_path):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 4, generator=g)
    state = collections.OrderedDict(w=base, t=base.t(), h=torch.randn(5, generator=g).half(),
                                    i=torch.arange(4, dtype=torch.int32), b=torch.tensor([True, False]))
    state._metadata = collections.OrderedDict([("", {"version": 1})])
    checkpoint = {"model": state, "epoch": 3, "history": [0.5, "x", (1, None)], "tags": {1, "a"},
                  "optimizer": {"state": {0: {"momentum_buffer": base}}, "param_groups": [{"params": [0]}]}}
    torch.save(checkpoint, tmp_path / "zip.bin")
    torch.save(checkpoint, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    fuzz(["zip", "zip-pickle", "legacy"], CASES // 2, str(tmp_path))


@pytest.mark.parametrize("kind", fuzz_worker.KINDS)
def test_fuzz_cases_are_a_function_of_seed_kind_and_index(kind):
    seeds = fuzz_worker.seed_checkpoints()
    assert fuzz_worker.seed_checkpoints() == seeds  # excite writes the same bytes every time
    first = [fuzz_worker.make_case(seeds, kind, index, 7) for index in range(20)]
    assert first == [fuzz_worker.make_case(seeds, kind, index, 7) for index in range(20)]
    assert len({blob for blob, _ in first}) >= 15  # and they differ from each other
