"""Time minivae on an idle machine and beside busy processes, with its BLAS threads chosen four ways.

Two workloads, each a fresh process:

- ``train``: ``python -m minivae train`` on the bundled digits, figures and report included;
- ``epoch``: one epoch of the reference workload of ``bench_epoch.py`` (784-400-20, batch 128).

Four ways to choose the BLAS threads:

- ``minivae``: minivae's default (``minivae.speed.blas``: one thread for small
  products, the library's default for larger ones);
- ``measure``: ``MINIVAE_BLAS_THREADS=measure``, one thread for small
  products, a choice timed each epoch for larger ones;
- ``one``: every product on one thread (``OPENBLAS_NUM_THREADS=1`` and friends);
- ``unlimited``: the library's default for every product, as before
  ``minivae.speed.blas`` (``MINIVAE_BLAS_THREADS=default``).

Each is timed idle and beside ``--busy`` processes that spin on the CPU, in
alternating order, ``--rounds`` times; the figures are medians of wall time,
and the ratios are of medians from this one run.

    python benchmarks/bench_load.py              # the figures quoted in benchmarks/README.md
    python benchmarks/bench_load.py --smoke      # what CI runs: proves it works, times nothing
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ENV = {"minivae": {}, "measure": {"MINIVAE_BLAS_THREADS": "measure"}, "one": {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
       "unlimited": {"MINIVAE_BLAS_THREADS": "default"}}
EPOCH = """
import sys, numpy as np, minivae
n = int(sys.argv[1])
x = (np.random.default_rng(0).random((n, 784), dtype=np.float32) < 0.13).astype(np.float32)
minivae.VAE(784, hidden_dims=(400,), latent_dim=20, seed=0).fit(x, epochs=1, batch_size=128, progress=False)
"""


def command(workload, args, out):
    if workload == "train":
        epochs = ["--epochs", "3"] if args.smoke else []
        code = f"from minivae.cli import main; raise SystemExit(main({['train', '--no-progress', '--out', out, *epochs]!r}))"
    else:
        code = EPOCH
    return [sys.executable, "-c", code, str(args.n)]


def timed(workload, mode, args, out):
    env = {**os.environ, **ENV[mode]}
    start = time.perf_counter()
    subprocess.run(command(workload, args, out), env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(args, busy, out):
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        times = {(w, m): [] for w in ("train", "epoch") for m in ENV}
        for r in range(args.rounds):
            keys = list(times) if r % 2 == 0 else list(times)[::-1]
            for key in keys:
                times[key].append(timed(*key, args, out))
        return {key: statistics.median(v) for key, v in times.items()}
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--busy", type=int, default=2, help="busy processes beside minivae (default: 2)")
    parser.add_argument("--n", type=int, default=60000, help="examples in the epoch workload")
    parser.add_argument("--smoke", action="store_true", help="tiny workloads, one round: proves it runs")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.n, args.busy = 1, 512, 1
    print(f"cpus={os.cpu_count()} rounds={args.rounds} busy={args.busy} epoch examples={args.n}")
    with tempfile.TemporaryDirectory() as out:
        for label, busy in (("idle", 0), (f"{args.busy} busy processes", args.busy)):
            med = measure(args, busy, out)
            print(f"{label}:")
            for workload in ("train", "epoch"):
                m, meas, one, unl = (med[workload, mode] for mode in ("minivae", "measure", "one", "unlimited"))
                print(f"  {workload:5}  minivae {m:7.2f} s   measure {meas:7.2f} s   one thread {one:7.2f} s   "
                      f"unlimited {unl:7.2f} s   minivae / one = {m / one:.2f}   measure / one = {meas / one:.2f}   "
                      f"minivae / unlimited = {m / unl:.2f}")


if __name__ == "__main__":
    main()
