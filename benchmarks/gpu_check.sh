#!/usr/bin/env bash
# The GPU checks, in one run, for a machine with an NVIDIA GPU and CuPy (and, for the comparison, a
# CUDA build of PyTorch): the tests on real CuPy and the GPU notebook, then one epoch against PyTorch at
# batch 128 and 1024.
#   bash benchmarks/gpu_check.sh
# Exit status 2: no usable CuPy or GPU here, so nothing was checked.
set -uo pipefail
cd "$(dirname "$0")/.."
python -c "import cupy; n = cupy.cuda.runtime.getDeviceCount(); print('CuPy', cupy.__version__, 'GPUs', n); assert n" \
    || { echo "no CuPy or no GPU: nothing to check here"; exit 2; }
status=0
# every test's real-CuPy case, the GPU kernels' tests and notebooks/09_gpu.ipynb
python -m pytest -q -rs -p no:cacheprovider -k "cupy or gpu" tests/ || status=1
vs=$(python -c "import torch; print('--vs torch' if torch.cuda.is_available() else '')" 2>/dev/null)
[ -n "$vs" ] || echo "PyTorch with CUDA is not installed: minivae and the floor only"
for batch in 128 1024; do
    python benchmarks/bench_epoch.py --backend cupy $vs --batch-size "$batch" --rounds 9 --no-memory || status=1
done
exit $status
