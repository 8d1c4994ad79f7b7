"""The benchmark's plumbing (not its numbers: speed is never asserted in a test): the peer protocol,
the alternating rounds, and one real case end to end with the torch peer and the JSON rows."""
import io
import json
import os
import subprocess
import sys

from excite.app.bench import protocol, runner as bench


def test_serve_answers_setup_time_release_and_exit():
    calls = []
    lines = [json.dumps(r) for r in ({"op": "setup", "kind": "k", "args": ["1"], "warmup": 2},
                                     {"op": "time", "runs": 3, "wake_s": 0.0}, {"op": "bogus"},
                                     {"op": "release"}, {"op": "exit"}, {"op": "time"})]
    replies = []

    def build(kind, args):
        calls.append((kind, args))
        return lambda: calls.append("run")

    protocol.serve(build, lines, replies.append)
    assert calls[0] == ("k", ["1"])
    assert calls.count("run") == 2 + 1 + 3  # warm-up, the untimed wake-up run, the timed runs
    assert replies[0] == {"ok": True}
    assert len(replies[1]["s"]) == 3 and all(t >= 0 for t in replies[1]["s"])
    assert "unknown op" in replies[2]["error"]
    assert replies[3] == {"ok": True} and len(replies) == 4, "nothing is answered after exit"


def test_serve_reports_a_failing_case_instead_of_dying():
    replies = []

    def build(kind, args):
        raise ValueError("no such model")

    protocol.serve(build, [json.dumps({"op": "setup", "kind": "x", "args": []})], replies.append)
    assert replies == [{"error": "ValueError: no such model"}]


def test_rounds_alternate_the_engines_and_split_the_repetitions():
    order = []

    def engine(name):
        def burst(n, min_s):
            order.append((name, n, min_s))
            return [float(len(order))] * n
        return burst

    medians = protocol.interleaved({"a": engine("a"), "b": engine("b")}, reps=7, min_s=0.5)
    assert order == [("a", 1, 0.5), ("b", 1, 0.5)] * 7  # fewer repetitions than ROUNDS: one round each
    order.clear()
    protocol.interleaved({"a": engine("a"), "b": engine("b")}, reps=protocol.ROUNDS + 2, min_s=0.0)
    assert order == [("a", 2, 0.0), ("b", 2, 0.0)] * 2 + [("a", 1, 0.0), ("b", 1, 0.0)] * (protocol.ROUNDS - 2)
    assert set(medians) == {"a", "b"}


def test_a_burst_times_its_runs_until_they_took_the_minimum_time():
    import time

    runs = []

    def run():
        runs.append(1)
        time.sleep(0.01)

    times = protocol.bursts(run, warmup=0)(2, min_s=0.05, wake_s=0.0)
    assert sum(times) >= 0.05 and 2 <= len(times) <= 5  # each run sleeps 10 ms at least
    assert len(runs) == len(times) + 1  # and one untimed wake-up run first
    assert len(protocol.bursts(run, warmup=0)(3, min_s=0.0, wake_s=0.0)) == 3  # no minimum: n runs


def test_one_case_end_to_end_writes_the_json_rows(tmp_path, torch):
    out = tmp_path / "rows.json"
    result = subprocess.run([sys.executable, "-m", "excite.bench", "--case", "se_fwd_8x96x28x28", "--reps", "3",
                             "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())
    assert [r["case"] for r in rows] == ["se_fwd_8x96x28x28"]
    row = rows[0]
    assert set(row) == {"case"} | {f"{engine}_s" for engine in bench.ENGINES}
    assert row["excite_eager_s"] > 0 and row["torch_s"] > 0  # the SE block runs eagerly, against torch eager
    assert row["excite_s"] is None and row["onnxruntime_s"] is None and row["openvino_s"] is None
    assert "se_fwd_8x96x28x28" in result.stdout and "ex/torch" in result.stdout


def test_the_best_peer_is_the_fastest_engine_that_is_not_excite():
    row = {"case": "c", "excite_s": 1.0, "excite_eager_s": 0.5, "torch_s": 3.0, "torchscript_s": 2.0,
           "onnxruntime_s": None}
    assert bench.best_peer(row) == ("torchscript", 2.0)
    assert bench.best_peer({"case": "c", "excite_s": 1.0}) is None


def test_the_command_line_help_describes_the_options():
    buffer = io.StringIO()
    sys_stdout, sys.stdout = sys.stdout, buffer
    try:
        try:
            bench.main(["--help"])
        except SystemExit as e:
            assert e.code == 0
    finally:
        sys.stdout = sys_stdout
    text = buffer.getvalue()
    assert "--quick" in text and "--json" in text and "--serve-onnxruntime" not in text


def test_distributed_case_runs_on_two_ranks():
    """The data-parallel training case end to end, tiny (its numbers mean nothing here)."""
    import pytest

    pytest.importorskip("mpi4py")
    from excite.app.bench import distributed
    from excite.app.launch import find_mpiexec

    if find_mpiexec() is None:
        pytest.skip("mpiexec not found")
    seconds = distributed.measure(2, 2, steps=1, warmup=0, batch=2, size=32, timeout=240)
    assert seconds > 0
    assert distributed.CASE in bench._known_cases() and distributed.CASE not in bench.QUICK_CASES


def test_first_ever_cases_run_fresh_processes_on_an_empty_kernel_cache(monkeypatch):
    from excite.app.bench import runner

    seen = []

    def fake_fresh(code, env=None):
        home = env["EXCITE_HOME"]
        seen.append((code, home, os.listdir(home), "NUMBA_CACHE_DIR" in env))
        return [1.5]

    monkeypatch.setattr(runner, "_fresh", fake_fresh)
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/somewhere/else")
    rows = runner.process_cases(1, False, lambda name: name.startswith("first_ever"))
    assert [case for case, _, _ in rows] == ["first_ever_inference_s", "first_ever_train_step_s"]
    assert [code for code, *_ in seen] == [runner._COLD_EXCITE, runner._TRAIN_STEP_EXCITE]
    for _, home, listing, numba_dir in seen:
        assert listing == [] and not numba_dir and not os.path.exists(home)  # empty, then removed
    assert seen[0][1] != seen[1][1]
    assert "first_ever_train_step_s" in runner._known_cases()


def test_whole_train_runs_only_when_named_first_ever_then_warm_in_one_home(monkeypatch):
    from excite.app.bench import runner

    homes = []

    def fake_run(env):
        homes.append((env["EXCITE_HOME"], os.listdir(env["EXCITE_HOME"])))
        open(os.path.join(env["EXCITE_HOME"], "built"), "w").close()  # what the first run leaves in the cache
        return 10.0 * len(homes)

    monkeypatch.setattr(runner, "_train_run", fake_run)
    assert runner.process_cases(1, False, lambda name: name in runner.TRAIN_RUN_CASES, named=()) == [] and homes == []
    rows = runner.process_cases(1, False, lambda name: False, named=("first_ever_train_run_s",))
    assert rows == [("first_ever_train_run_s", 10.0, None), ("train_run_s", 20.0, None)]
    (first_home, first_listing), (warm_home, warm_listing) = homes
    assert first_home == warm_home and first_listing == [] and warm_listing == ["built"]
    assert set(runner.TRAIN_RUN_CASES) <= set(runner._known_cases())


def test_compile_case_times_excite_compile_after_one_untimed_compile(monkeypatch):
    """`compile_<model>_s` is the median of ``excite.compile`` alone: the first compile (and its run, which loads
    the kernels) is not timed, every later one is, and the model is never run again."""
    import excite as ex
    from excite.app.bench import runner

    calls = []

    def fake_compile(model, x):
        calls.append(tuple(x.shape))
        return lambda y: calls.append("run")

    monkeypatch.setattr(ex, "compile", fake_compile)
    assert runner._compile_seconds("mobilenet_v3_small", 3) >= 0
    assert calls == [(1, 3, 224, 224), "run", (1, 3, 224, 224), (1, 3, 224, 224), (1, 3, 224, 224)]
    assert {f"compile_{name}_s" for name in runner.COMPILE_MODELS} <= set(runner._known_cases())
