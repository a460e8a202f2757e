"""Where a training step's time goes: the median time of each stage of minivae's step, over real epochs.

    python benchmarks/profile_step.py              # the reference workload of bench_epoch.py
    python benchmarks/profile_step.py --epochs 1 --n 6400

It runs the same stages as ``minivae.training.fit`` (the model's own methods,
not a re-implementation), each between two clock reads, so the figures add
up to about one step of ``bench_epoch.py``. Medians, because this machine is
shared and single steps are noisy.
"""

import argparse
import statistics
import time
from collections import defaultdict

from bench_epoch import D, H, K, make_data


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=60000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    import minivae
    from minivae.losses import kl_per_dimension
    from minivae.training import _finite

    x = make_data(args.n)
    model = minivae.VAE(D, hidden_dims=(H,), latent_dim=K, seed=0)
    model.fit(x[:4 * args.batch_size], epochs=1, batch_size=args.batch_size, progress=False)  # warm-up
    opt, B = model.optimizer_, args.batch_size
    times = defaultdict(list)

    def stage(name, start):
        now = time.perf_counter()
        times[name].append(now - start)
        return now

    for _ in range(args.epochs):
        perm = model.rng_.permutation(args.n)
        for i in range(0, args.n - B + 1, B):
            t = time.perf_counter()
            xb = x[perm[i:i + B]]
            eps = model._draw_normal((B, K))
            t = stage("batch and noise", t)
            mu, logvar = model._encode(xb)
            t = stage("encoder forward (3 products)", t)
            z = model._sampler.forward(mu, logvar, eps)
            logits, _ = model._decode(z)
            t = stage("sample + decoder forward (2 products)", t)
            rec, dlogits, _ = model._nll(xb, logits, None)
            t = stage("Bernoulli loss and gradient", t)
            kl, dmu_kl, dlogvar_kl = kl_per_dimension(mu, logvar)
            float(rec.mean()), float(kl.sum(axis=1).mean())
            t = stage("KL and the loss value", t)
            dlogits *= 1.0 / B
            dz = model._decode_backward(dlogits, None)
            t = stage("decoder backward (4 products)", t)
            dmu, dlogvar = model._sampler.backward(dz)
            dmu += dmu_kl / B
            dlogvar += dlogvar_kl / B
            model._encode_backward(dmu, dlogvar)
            t = stage("sample + encoder backward (5 products)", t)
            _finite(model.flat_grads)
            t = stage("finite-gradient check", t)
            opt.step(model.flat_params, model.flat_grads)
            stage(f"Adam over {model.n_params:,} parameters", t)

    total = 0.0
    print(f"median ms per step, batch {B}, {len(times['batch and noise'])} steps:")
    for name, ts in times.items():
        med = statistics.median(ts) * 1e3
        total += med
        print(f"  {med:6.3f}  {name}")
    print(f"  {total:6.3f}  sum of the medians")


if __name__ == "__main__":
    main()
