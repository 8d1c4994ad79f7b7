"""How the benchmark times engines side by side: alternating bursts, and the peer-process protocol.

Every engine but excite runs in a process of its own (`Peer`), speaking `serve`'s JSON-lines
protocol: excite never imports torch, and no engine's idle threads slow another.
"""
import json
import statistics
import subprocess
import sys
import time

# the timed repetitions are split into up to this many rounds, the engines taking turns: on a shared VM
# the machine's speed changes for spells of about a second, and more, shorter turns let every engine see
# them alike (with 5 rounds, one engine's median at batch 1 still moved 1.4x between two runs)
ROUNDS = 15
SETTLE_S = 0.02  # pause before each burst: an engine's idle threads spin for a few ms after its runs
# untimed runs before each burst's timed ones, for at least this long: after the pause a 2-core VM
# wakes slowly (seen here: parallel regions taking 1.2 ms instead of 0.07 ms until ~30 ms of work)
WAKE_S = 0.05
# each burst's timed runs last at least this long (and number at least its share of the repetitions), the
# same for every engine: a 2 ms case gets ~50 samples per round instead of 1
BURST_S = 0.1


def interleaved(engines, reps, min_s=0.0):
    """Medians of at least ``reps`` timed runs per engine, in up to ROUNDS rounds: in each round every engine
    runs a short burst (untimed runs for WAKE_S, then its share of timed runs, repeated until they took
    ``min_s`` seconds), so a busy spell on the machine hits all engines alike. ``engines`` maps a name to
    ``burst(n, min_s)``, which returns the seconds of each timed run (n at least)."""
    times = {name: [] for name in engines}
    rounds = min(ROUNDS, reps)
    for r in range(rounds):
        share = reps // rounds + (r < reps % rounds)
        for name, burst in engines.items():
            time.sleep(SETTLE_S)
            times[name] += burst(share, min_s)
    return {name: statistics.median(values) for name, values in times.items()}


def bursts(fn, warmup):
    for _ in range(warmup):
        fn()

    def burst(n, min_s=0.0, wake_s=WAKE_S):
        awake = time.perf_counter() + wake_s
        fn()
        while time.perf_counter() < awake:
            fn()
        times, total = [], 0.0
        while len(times) < n or total < min_s:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            total += times[-1]
        return times

    return burst


class Peer:
    """An engine in its own process, speaking `serve`'s protocol: builds a case, times bursts on request."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _request(self, **message):
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark peer exited (code {self.proc.wait()}) on {message}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"benchmark peer: {reply['error']}")
        return reply

    def setup(self, kind, args, warmup):
        self._request(op="setup", kind=kind, args=[str(a) for a in args], warmup=warmup)

    def burst(self, n, min_s=0.0):
        return self._request(op="time", runs=n, min_s=min_s, wake_s=WAKE_S)["s"]

    def release(self):
        self._request(op="release")

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait()


def serve(build, lines=None, reply=None):
    """The peer side: JSON requests, one per line, each answered by one JSON line.

    ``{"op": "setup", "kind": ..., "args": [...], "warmup": W}`` calls ``build(kind, args)`` for a
    function that runs the case once, then runs it W times; ``{"op": "time", "runs": n, "min_s": m,
    "wake_s": s}`` runs it untimed for s seconds (once at least), then timed n times at least and until
    the timed runs took m seconds (0 if absent), and answers ``{"s": [seconds, ...]}``;
    ``{"op": "release"}`` drops it; ``{"op": "exit"}`` ends the loop.
    """
    lines = sys.stdin if lines is None else lines
    reply = reply or (lambda message: print(json.dumps(message), flush=True))
    run = None
    for line in lines:
        request = json.loads(line)
        op = request["op"]
        if op == "exit":
            return
        try:
            if op == "setup":
                run = build(request["kind"], request["args"])
                for _ in range(request.get("warmup", 2)):
                    run()
                reply({"ok": True})
            elif op == "time":
                runs, min_s, wake_s = request.get("runs", 1), request.get("min_s", 0.0), request.get("wake_s", 0.0)
                reply({"s": bursts(run, 0)(runs, min_s, wake_s)})
            elif op == "release":
                run = None
                reply({"ok": True})
            else:
                reply({"error": f"unknown op {op!r}"})
        except Exception as e:  # noqa: BLE001  (reported to the benchmark, which raises it)
            reply({"error": f"{type(e).__name__}: {e}"})
