#!/usr/bin/env bash
# What a first GPU run should do (issues 4, 6, 7, 9): the CUDA tests and the
# GPU rows of the benchmarks, results copied to $OUT. Sized for the device tool's
# 10-minute commands: run it in parts, e.g.
#
#   here:   mkdir -p .gpu && cp -r ../shared/data/kodak .gpu/ && echo /.gpu/ >> .git/info/exclude
#   device: bash benchmarks/gpu_session.sh tests        (carry: .gpu)
#           bash benchmarks/gpu_session.sh exact
#           bash benchmarks/gpu_session.sh speed
#
# The GPU machines have torch 2.11 + triton preinstalled; the package goes in without deps.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/ecf-gpu-out}
mkdir -p "$OUT"
pip install -q --no-deps -e . >/dev/null
KODAK=${KODAK:-.gpu/kodak}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import ecf_engine; print(ecf_engine.backend_report())"

case "${1:-tests}" in
  tests)   # CUDA kernel tests in every dtype, the EGR CUDA build, the whole suite on the GPU machine
    python -m pytest -q tests -x 2>&1 | tail -15
    ;;
  exact)   # encode on GPU -> decode on CPU and back, all Kodak; kernel mismatch of the float kernels
    python benchmarks/cross_device.py --folder "$KODAK" --out "$OUT/cross-device.json"
    python benchmarks/kernel_mismatch.py "$KODAK"/kodim23.png 2>&1 | tail -5      # picks CUDA itself
    cp benchmarks/results/kernel-mismatch-*.json "$OUT/" 2>/dev/null
    ;;
  speed)   # kernels vs references, the ladder with rungs (e) and (f), engine ms split by stage
    python benchmarks/bench_kernels.py --device cuda --repeat 20 2>&1 | tail -12
    python benchmarks/ladder.py --device cuda --repeat 5 2>&1 | tail -20
    python benchmarks/speed.py --device cuda --repeat 5 2>&1 | tail -6
    cp benchmarks/results/kernels-cuda.json benchmarks/results/ladder-cuda.json benchmarks/results/speed-cuda.json "$OUT/"
    ;;
  *)
    echo "usage: $0 tests|exact|speed" >&2
    exit 2
    ;;
esac
