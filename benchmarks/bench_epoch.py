"""Time one training epoch of minivae, side by side with PyTorch and with the matrix-multiply floor.

The reference workload is the PyTorch examples' MNIST VAE: 784-400-20 with
ReLU, Bernoulli likelihood, Adam (lr 1e-3), batch 128, float32, one epoch over
60,000 examples of synthetic binary data (timing does not depend on content).

    python benchmarks/bench_epoch.py                  # minivae (both update paths) and the floor
    python benchmarks/bench_epoch.py --vs torch       # ... and PyTorch (default and fused Adam), alternately
    python benchmarks/bench_epoch.py --backend cupy --vs torch --batch-size 1024
    python benchmarks/bench_epoch.py --smoke          # a tiny run that proves it works (CI)

minivae is timed on both paths: ``minivae`` (the fused update: on the CPU
the compiled loop of the ``fast`` extra, when numba is installed; on the GPU
one CUDA kernel, and each chain of element-wise operations fused into one
kernel, see ``minivae.backend.elementwise``) and ``minivae-numpy`` (every
operation its own NumPy or CuPy call, forced with ``MINIVAE_FAST=0``).
PyTorch is timed with its default Adam and with ``Adam(fused=True)``.

Each figure is the median over rounds; ratios are of medians from this one run.
Peak memory is measured for each framework in its own fresh process.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

D, H, K = 784, 400, 20


def make_data(n, seed=0):
    return (np.random.default_rng(seed).random((n, D), dtype=np.float32) < 0.13).astype(np.float32)


def synchronize(backend):
    if backend == "cupy":
        import cupy
        cupy.cuda.Device().synchronize()


# ---------------------------------------------------------------- minivae
def minivae_setup(x, backend):
    import minivae
    model = minivae.VAE(D, hidden_dims=(H,), latent_dim=K, dtype="float32", backend=backend, seed=0)
    x_dev = model.xp.asarray(x)
    return model, x_dev


def minivae_epoch(state, batch_size, backend, fast=True):
    model, x_dev = state
    previous = os.environ.get("MINIVAE_FAST")
    os.environ["MINIVAE_FAST"] = "1" if fast else "0"
    try:
        model.fit(x_dev, epochs=1, batch_size=batch_size, lr=1e-3, progress=False)
    finally:
        if previous is None:
            del os.environ["MINIVAE_FAST"]
        else:
            os.environ["MINIVAE_FAST"] = previous
    synchronize(backend)


# ---------------------------------------------------------------- PyTorch
def torch_setup(x, backend, fused=False):
    import torch
    from torch import nn

    device = "cuda" if backend == "cupy" else "cpu"
    torch.manual_seed(0)

    class TorchVAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc21, self.fc22 = nn.Linear(D, H), nn.Linear(H, K), nn.Linear(H, K)
            self.fc3, self.fc4 = nn.Linear(K, H), nn.Linear(H, D)

        def forward(self, xb):
            h = torch.relu(self.fc1(xb))
            mu, logvar = self.fc21(h), self.fc22(h)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            return self.fc4(torch.relu(self.fc3(z))), mu, logvar

    model = TorchVAE().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
    return torch, model, opt, torch.as_tensor(x, device=device), device


def torch_epoch(state, batch_size, backend):
    torch, model, opt, x, device = state
    n = x.shape[0]
    perm = torch.randperm(n, device=device)
    for i in range(0, n, batch_size):
        xb = x[perm[i:i + batch_size]]
        logits, mu, logvar = model(xb)
        rec = torch.nn.functional.binary_cross_entropy_with_logits(logits, xb, reduction="sum")
        kl = 0.5 * torch.sum(mu * mu + logvar.exp() - logvar - 1)
        loss = (rec + kl) / xb.shape[0]  # mean negative ELBO, as minivae
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # read the loss every step, as minivae's progress bar does
    if device == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- the floor
def floor_setup(x, backend):
    """Only the matrix products of one training step, on preallocated buffers.

    Forward: x W1, h Wmu, h Wlogvar, z W3, h3 W4 (5). Backward: the 5 weight
    gradients and the 4 input gradients that reach a parameter (dh3, dz, and
    dh from both heads): 14 products. The 15th, the gradient with respect to
    the data, is never needed, and minivae does not form it.
    """
    import minivae
    xp = minivae.resolve(backend)
    rng = np.random.default_rng(0)

    def a(*shape):
        return xp.asarray(rng.standard_normal(shape, dtype=np.float32))

    return xp, {"W1": a(D, H), "Wmu": a(H, K), "Wlv": a(H, K), "W3": a(K, H), "W4": a(H, D)}, a


def floor_epoch(state, batch_size, backend, n):
    xp, W, a = state
    B = batch_size
    x, h, z, h3, dl = a(B, D), a(B, H), a(B, K), a(B, H), a(B, D)
    out = {k: xp.empty_like(v) for k, v in W.items()}
    bufs = {"h": a(B, H), "mu": a(B, K), "lv": a(B, K), "h3": a(B, H), "l": a(B, D), "dh3": a(B, H),
            "dz": a(B, K), "dh": a(B, H), "dh2": a(B, H)}
    mm = xp.matmul
    for _ in range(0, n, B):
        mm(x, W["W1"], out=bufs["h"]); mm(h, W["Wmu"], out=bufs["mu"]); mm(h, W["Wlv"], out=bufs["lv"])
        mm(z, W["W3"], out=bufs["h3"]); mm(h3, W["W4"], out=bufs["l"])
        mm(h3.T, dl, out=out["W4"]); mm(dl, W["W4"].T, out=bufs["dh3"])
        mm(z.T, bufs["dh3"], out=out["W3"]); mm(bufs["dh3"], W["W3"].T, out=bufs["dz"])
        mm(h.T, bufs["mu"], out=out["Wmu"]); mm(h.T, bufs["lv"], out=out["Wlv"])
        mm(bufs["mu"], W["Wmu"].T, out=bufs["dh"]); mm(bufs["lv"], W["Wlv"].T, out=bufs["dh2"])
        mm(x.T, bufs["dh"], out=out["W1"])
    synchronize(backend)


# ---------------------------------------------------------------- memory, in a fresh process
def status_mib(field):
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in MiB.

    Not ``getrusage``'s ``ru_maxrss``: Linux carries it over from the parent
    across fork and exec, so a child would report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (peak memory is measured on Linux only)")


def measure_memory(which, n, batch_size, backend):
    x = make_data(n)
    setup = minivae_setup if which == "minivae" else torch_setup  # minivae: its default update path
    epoch = minivae_epoch if which == "minivae" else torch_epoch
    # Warm up on a few batches first: the BLAS library's thread buffers and a
    # framework's allocator caches are one-off costs, not the epoch's working memory.
    epoch(setup(x[:4 * batch_size], backend), batch_size, backend)
    state = setup(x, backend)
    before = status_mib("VmRSS")
    epoch(state, batch_size, backend)
    print(json.dumps({"before": before, "peak": status_mib("VmHWM")}))


def memory_of(which, args):
    cmd = [sys.executable, __file__, "--_memory", which, "--n", str(args.n), "--batch-size", str(args.batch_size),
           "--backend", args.backend]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=60000, help="examples per epoch (default 60000)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    parser.add_argument("--vs", choices=("torch",), help="also time the same model in PyTorch")
    parser.add_argument("--smoke", action="store_true", help="tiny n and one round: proves the benchmark runs")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--_memory", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.n, args.rounds = 1024, 1
    if args._memory:
        return measure_memory(args._memory, args.n, args.batch_size, args.backend)

    from minivae.speed import fused

    x = make_data(args.n)
    runners = {}
    if fused.AVAILABLE or args.backend == "cupy":  # on a GPU the fused update is a CUDA kernel: no numba needed
        runners["minivae"] = (minivae_setup(x, args.backend), minivae_epoch)
    else:
        print("the fast extra (numba) is not installed: only the NumPy update is timed")
    runners["minivae-numpy"] = (minivae_setup(x, args.backend), lambda s, b, be: minivae_epoch(s, b, be, fast=False))
    if args.vs == "torch":
        try:
            runners["torch"] = (torch_setup(x, args.backend), torch_epoch)
            runners["torch-fused"] = (torch_setup(x, args.backend, fused=True), torch_epoch)
        except ImportError:
            print("PyTorch is not installed: pip install torch (a CPU build is enough)")
            return 1
    floor_state = floor_setup(x, args.backend)
    runners["floor"] = (floor_state, lambda s, b, be: floor_epoch(s, b, be, args.n))

    for name, (state, epoch) in runners.items():  # warm-up: allocators, BLAS threads, kernels
        epoch(state, args.batch_size, args.backend)
    times = {name: [] for name in runners}
    for _ in range(args.rounds):  # alternate, so drift in the machine affects all alike
        for name, (state, epoch) in runners.items():
            start = time.perf_counter()
            epoch(state, args.batch_size, args.backend)
            times[name].append(time.perf_counter() - start)

    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"backend={args.backend} n={args.n} batch={args.batch_size} rounds={args.rounds} "
          f"cpus={os.cpu_count()} numpy={np.__version__}"
          + (f" torch={runners['torch'][0][0].__version__} torch_threads={runners['torch'][0][0].get_num_threads()}"
             if "torch" in runners else ""))
    for name in runners:
        print(f"{name:>13}: median {med[name]:.3f} s/epoch   (rounds: {', '.join(f'{t:.3f}' for t in times[name])})")
    for ours in [name for name in ("minivae", "minivae-numpy") if name in med]:
        for theirs in [name for name in ("torch", "torch-fused", "floor") if name in med]:
            print(f"{ours} / {theirs} = {med[ours] / med[theirs]:.2f}")

    if not args.no_memory:
        mem = {name: memory_of(name, args) for name in ["minivae"] + (["torch"] if "torch" in runners else [])}
        for name, m in mem.items():
            print(f"{name:>8}: peak RSS {m['peak']:.0f} MiB, of which {m['peak'] - m['before']:.0f} MiB added by the epoch")
        if len(mem) == 2 and args.backend == "numpy":
            a, b = mem["minivae"], mem["torch"]
            print(f"peak RSS minivae / torch = {a['peak'] / b['peak']:.2f}; "
                  f"memory added by the epoch minivae / torch = {(a['peak'] - a['before']) / max(1e-9, b['peak'] - b['before']):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
