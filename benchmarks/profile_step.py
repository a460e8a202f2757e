"""Where a training step's time goes: the median time of each stage of minivae's step, inside real epochs.

    python benchmarks/profile_step.py              # the reference workload of bench_epoch.py, 2 epochs
    python benchmarks/profile_step.py --epochs 1 --n 6400

It runs ``VAE.fit`` itself with a clock around each stage that fit and the
model call (their own methods, wrapped on this one model), and prints each
stage's median and mean per step. The means add up to the whole step; what
is not inside a stage (the batch gather, the noise draw, the bookkeeping)
is the rest. Compare medians: this machine is shared, and a few slow steps
pull the means up.
"""

import argparse
import statistics
import time
import types
from collections import defaultdict

from bench_epoch import D, H, K, make_data


def timed(fn, times, name):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        times[name].append(time.perf_counter() - start)
        return out

    return wrapper


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=60000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    import minivae
    from minivae import model as model_module
    from minivae import training

    x = make_data(args.n)
    vae = minivae.VAE(D, hidden_dims=(H,), latent_dim=K, seed=0)
    vae.fit(x[:4 * args.batch_size], epochs=1, batch_size=args.batch_size, progress=False)  # warm-up

    times = defaultdict(list)
    stages = {  # (owner, attribute): label, in the order a step runs them
        (vae, "encoder_forward"): "encoder forward (3 products)",
        (vae.sampler, "forward"): "reparameterised sample",
        (vae, "decoder_forward"): "decoder forward (2 products)",
        (vae, "nll"): "Bernoulli loss and its gradient",
        (model_module, "kl_per_dimension"): "KL and its gradient",
        (vae, "decoder_backward"): "decoder backward (4 products)",
        (vae.sampler, "backward"): "sample backward",
        (vae, "encoder_backward"): "encoder backward (5 products)",
        (training.StepSnapshot, "take"): "step count, generator and totals kept to undo a failed step",
        (vae.optimizer_, "step"): f"Adam over {vae.n_params:,} parameters, saving what it changes",
    }
    originals = {key: getattr(*key) for key in stages}
    for (owner, attr), label in stages.items():
        setattr(owner, attr, timed(originals[owner, attr], times, label))
    try:
        start = time.perf_counter()
        vae.fit(x, epochs=args.epochs, batch_size=args.batch_size, progress=False)
        elapsed = time.perf_counter() - start
    finally:
        for (owner, attr), fn in originals.items():
            if isinstance(owner, (types.ModuleType, type)):
                setattr(owner, attr, fn)
            else:
                delattr(owner, attr)  # the instance falls back to its class's method

    steps = len(times[stages[vae.optimizer_, "step"]])
    step = elapsed / steps * 1e3
    print(f"ms per step, batch {args.batch_size}, {steps} steps\n  median    mean  stage  (median of one call; mean per step)")
    total = 0.0
    for label in stages.values():
        med, mean = statistics.median(times[label]) * 1e3, sum(times[label]) / steps * 1e3
        total += mean
        print(f"  {med:6.3f}  {mean:6.3f}  {label}")
    print(f"          {step - total:6.3f}  the rest: batch gather, noise, the finite checks' sums of squares and their read-back, bookkeeping, per-epoch diagnostics")
    print(f"          {step:6.3f}  the whole step (the epochs' time / steps)")


if __name__ == "__main__":
    main()
