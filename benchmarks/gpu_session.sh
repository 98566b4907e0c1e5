#!/usr/bin/env bash
# The one-call GPU run: everything a machine with a GPU should run, in one device command
# of at most 10 minutes, results in $OUT.
#
#   here:    bash benchmarks/gpu_session.sh prepare      # Kodak + a subset of the training JPEGs
#                                                        # -> .gpu-data/ (git-ignored), sized so the
#                                                        # working tree plus .gpu-data stay <= 64 MiB
#   device:  bash benchmarks/gpu_session.sh all          (run's carry: [".gpu-data"], timeout_s 600)
#   CPU:     bash benchmarks/gpu_session.sh all --dry-run   # the same steps on the CPU, tiny preset, < 3 min
#
# `all` runs, in order, each step time-boxed (`timeout`) within ECF_GPU_SECONDS (default 570):
#   (a) tests      the CUDA kernel tests (tests/test_kernels.py, tests/test_kernels_e2e.py)
#   (b) exact      encode Kodak on the GPU and decode on the CPU and the other way
#                  (python -m benchmarks exact --cross-device; dry run: the CLI round trip, 1 image)
#   (c) timings    Triton kernels vs their references (benchmarks kernels ops), Kodak and 4K
#                  encode / decode (benchmarks speed), training throughput (train_throughput.py)
#   (d) train      the rest of the time: small-vr from the shipped small-vr weights (from
#                  .gpu-data/continue.pt with its Adam moments if that exists; else --init
#                  default), bf16 autocast, channels_last, crops cut on the GPU from uint8
#                  images, --time-budget; the step count is sized from (c)'s measured s/step
#   (e) collect    run.json (every step's status, time and output tail), the result JSONs,
#                  the trained export (best.safetensors) and the compact checkpoint (last.pt)
#                  -> $OUT: at most 8 files of at most 16 MiB
# A step whose script is missing fails loudly with its name; the later steps still run, and the
# exit status is 1 if any step failed.
#
# Knobs (environment): OUT, ECF_GPU_DATA (.gpu-data), ECF_GPU_SECONDS, ECF_GPU_BATCH (16 crops),
# ECF_TRAIN_ARGS (more `ecf train` options); for prepare: ECF_TRAIN_SRC, ECF_KODAK_SRC,
# ECF_CONTINUE (a last.pt to go on from, copied as continue.pt), ECF_CARRY_MIB (64).
# The GPU machines have torch + triton preinstalled; the package goes in without deps.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=${1:-all}
DRY=0
for a in "$@"; do [[ "$a" == "--dry-run" ]] && DRY=1; done
[[ "$MODE" == "--dry-run" ]] && MODE=all
DATA=${ECF_GPU_DATA:-$ROOT/.gpu-data}
PY=${PYTHON:-python}

prepare() {
  local train_src=${ECF_TRAIN_SRC:-$ROOT/../shared/data/train} kodak_src=${ECF_KODAK_SRC:-$ROOT/../shared/data/kodak}
  mkdir -p "$DATA/train" "$DATA/kodak"
  cp "$kodak_src"/*.png "$DATA/kodak/" || { echo "gpu_session prepare: no Kodak PNGs in $kodak_src" >&2; return 1; }
  if [[ -n "${ECF_CONTINUE:-}" ]]; then
    "$PY" -m ecf_engine.train --convert "$ECF_CONTINUE" "$DATA/continue.pt" || return 1   # compact form
  fi
  # the training subset: what fits beside the working tree (tracked + untracked, not ignored)
  "$PY" - "$train_src" "$DATA" "${ECF_CARRY_MIB:-64}" <<'EOF'
import random, shutil, subprocess, sys
from pathlib import Path
src, data, limit = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]) * 2**20
tree = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, check=True).stdout
tree = sum(Path(p).stat().st_size for p in tree.decode().split("\0") if p and Path(p).is_file())
extra = sum(p.stat().st_size for p in data.rglob("*") if p.is_file() and p.parent.name != "train")
room = min(30 * 2**20, limit - tree - extra - 2 * 2**20)          # 2 MiB margin for files others add
files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
random.Random(0).shuffle(files)                                  # a spread over the sources, repeatable
for old in (data / "train").iterdir():
    old.unlink()
used = n = 0
for f in files:
    if used + f.stat().st_size > room:
        continue
    shutil.copy2(f, data / "train" / f.name)
    used, n = used + f.stat().st_size, n + 1
if n < 20:
    sys.exit(f"gpu_session prepare: only {n} training images fit in {room / 2**20:.1f} MiB beside the tree")
total = tree + extra + used
print(f"{data}: {n} training images ({used / 2**20:.1f} MiB), Kodak and extras {extra / 2**20:.1f} MiB; "
      f"with the working tree ({tree / 2**20:.1f} MiB) {total / 2**20:.1f} MiB of {limit / 2**20:.0f}")
print('device call: run(command="bash benchmarks/gpu_session.sh all", carry=[".gpu-data"], timeout_s=600)')
EOF
}

if [[ "$MODE" == "prepare" ]]; then
  prepare
  exit $?
fi
if [[ "$MODE" != "all" ]]; then
  echo "usage: $0 prepare | all [--dry-run]" >&2
  exit 2
fi

T0=$(date +%s)
if (( DRY )); then
  TOTAL=${ECF_GPU_SECONDS:-170}; DEVICE=cpu; OUT=${OUT:-$(mktemp -d /tmp/ecf-gpu-dry.XXXXXX)}
else
  TOTAL=${ECF_GPU_SECONDS:-570}; DEVICE=cuda; OUT=${OUT:-/tmp/ecf-gpu-out}
  if ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    echo "gpu_session: no CUDA GPU here; on a CPU run: $0 all --dry-run" >&2
    exit 2
  fi
  pip install -q --no-deps -e . >/dev/null 2>&1 || echo "gpu_session: pip install -e . failed; using the tree as is" >&2
fi
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/ecf-gpu-work.XXXXXX)
KODAK=${KODAK:-$DATA/kodak}
STEPS_LOG=$WORK/steps.tsv
: > "$STEPS_LOG"
FAILED=0
left() { echo $(( TOTAL - ($(date +%s) - T0) )); }

record() {   # name rc seconds log
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$STEPS_LOG"
  (( $2 != 0 )) && FAILED=1
  return 0
}

need() {     # step path...: every path must exist, else the step fails loudly
  local s=$1; shift
  for f in "$@"; do
    if [[ ! -e "$f" ]]; then
      echo "gpu_session: step $s FAILED: $f is missing (benchmarks reorganised? update benchmarks/gpu_session.sh)" >&2
      record "$s" 127 0 "missing $f"
      return 1
    fi
  done
}

run_step() { # name limit_s command...: time-boxed, output in $WORK/name.log (tail shown)
  local name=$1 limit=$2; shift 2
  local room=$(( $(left) - 15 ))
  (( limit > room )) && limit=$room
  if (( limit < 5 )); then
    echo "gpu_session: step $name skipped: no time left" >&2
    record "$name" 124 0 "skipped: no time left"
    return 1
  fi
  echo "== $name (at most ${limit} s): $*"
  local t=$(date +%s)
  # SIGINT first: Python unwinds (KeyboardInterrupt), so a JIT build killed half-way releases
  # torch's build lock instead of leaving one that blocks every later build
  timeout -s INT --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  tr '\r' '\n' < "$WORK/$name.log" | grep -v '^ *$' | tail -n 8
  (( rc == 124 )) && echo "gpu_session: step $name TIMED OUT after ${limit} s" >&2
  (( rc != 0 && rc != 124 )) && echo "gpu_session: step $name FAILED (exit $rc)" >&2
  record "$name" "$rc" $(( $(date +%s) - t )) "$WORK/$name.log"
}

echo "gpu_session: $( ((DRY)) && echo "dry run on the CPU" || echo "on the GPU" ), ${TOTAL} s, data $DATA, results $OUT"
(( DRY )) || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$PY" -c "import ecf_engine; print(ecf_engine.backend_report())" 2>&1 | tail -n 12

# (a) the CUDA kernel tests (dry run: the kernel tests that run on a CPU)
if need a-tests tests/test_kernels.py tests/test_kernels_e2e.py; then
  if (( DRY )); then
    run_step a-tests 60 "$PY" -m pytest -q -x -p no:cacheprovider -m "not slow" tests/test_kernels.py
  else
    run_step a-tests 100 "$PY" -m pytest -q -x -p no:cacheprovider tests/test_kernels.py tests/test_kernels_e2e.py
  fi
fi

# (b) cross-device bit-exactness on Kodak (dry run: the CLI round trip of one image)
if need b-exact benchmarks/__main__.py benchmarks/exact.py "$KODAK"; then
  if (( DRY )); then
    run_step b-exact 40 "$PY" -m benchmarks exact --folder "$KODAK" --limit 1 --out "$WORK/roundtrip.json"
  else
    run_step b-exact 120 "$PY" -m benchmarks exact --cross-device --folder "$KODAK" --out "$WORK/cross-device.json"
  fi
fi

# (c) kernel timings, end-to-end Kodak / 4K encode and decode, training throughput
if need c-kernels benchmarks/__main__.py benchmarks/kernels.py; then
  if (( DRY )); then
    run_step c-kernels 45 "$PY" -m benchmarks kernels ops --device cpu --repeat 1 --warmup 0 --sizes kodak \
      --out "$WORK/kernels-cpu.json"
  else
    run_step c-kernels 90 "$PY" -m benchmarks kernels ops --device cuda --repeat 20 --out "$WORK/kernels-cuda.json"
  fi
fi
if need c-speed benchmarks/__main__.py benchmarks/speed.py; then
  if (( DRY )); then
    run_step c-speed 30 "$PY" -m benchmarks speed --device cpu --models tiny --sizes 256x256 --repeat 1 \
      --out "$WORK/speed-cpu"
  else
    run_step c-speed 60 "$PY" -m benchmarks speed --device cuda --sizes 768x512 3840x2160 --repeat 3 \
      --out "$WORK/speed-cuda"
  fi
fi
BATCH=${ECF_GPU_BATCH:-16}
if need c-train-throughput benchmarks/train_throughput.py; then
  if (( DRY )); then
    run_step c-train-throughput 40 "$PY" benchmarks/train_throughput.py --device cpu --preset tiny-vr --crop 64 \
      --steps 2 --warmup 1 --paths old bf16 --data "$DATA/train" --images 8 --out "$WORK/train-throughput-cpu.json"
  else
    run_step c-train-throughput 45 "$PY" benchmarks/train_throughput.py --device cuda --preset small-vr \
      --batch "$BATCH" --steps 10 --warmup 3 --data "$DATA/train" --out "$WORK/train-throughput-cuda.json"
  fi
fi

# (d) train for the rest of the time
if need d-train "$DATA/train"; then
  BUDGET=$(( $(left) - 25 ))                  # leaves the collect step its time
  # steps that fit the budget at (c)'s measured bf16 s/step (startup, validations: 30 % slack)
  STEPS=$("$PY" - "$WORK/train-throughput-$DEVICE.json" "$BUDGET" "$( ((DRY)) && echo 40 || echo 2000 )" <<'EOF'
import json, sys
try:
    rows = json.load(open(sys.argv[1]))["rows"]
    s = next(r["s_per_step"]["median"] for r in rows if r["path"] == "bf16")
    print(max(10, int(0.7 * float(sys.argv[2]) / s)))
except Exception:
    print(sys.argv[3])
EOF
)
  if (( DRY )); then
    ARGS=(--preset tiny-vr --crop 64 --batch 2 --device cpu --precision auto)
  elif [[ -f "$DATA/continue.pt" ]]; then
    ARGS=(--preset small-vr --continue-from "$DATA/continue.pt" --batch "$BATCH" --device cuda --precision bf16)
  elif "$PY" -c "from ecf_engine.weights import MODELS; assert 'small-vr' in MODELS" 2>/dev/null; then
    ARGS=(--preset small-vr --init small-vr --batch "$BATCH" --device cuda --precision bf16)
  else
    ARGS=(--preset small-vr --init default --batch "$BATCH" --device cuda --precision bf16)
  fi
  WARM=$(( STEPS / 10 < 100 ? STEPS / 10 : 100 ))
  # shellcheck disable=SC2086
  run_step d-train $(( BUDGET + 20 )) "$PY" -m ecf_engine.train "${ARGS[@]}" --data "$DATA/train" --ste \
    --steps "$STEPS" --warmup "$WARM" --lr 1e-4 --val-every $(( STEPS / 4 > 0 ? STEPS / 4 : 1 )) \
    --time-budget "$BUDGET" --out "$WORK/run" ${ECF_TRAIN_ARGS:-}
fi

# (e) collect: run.json + results + export + checkpoint, <= 8 files of <= 16 MiB
"$PY" - "$WORK" "$OUT" "$STEPS_LOG" "$DRY" "$TOTAL" "$(( $(date +%s) - T0 ))" <<'EOF'
import json, shutil, sys
from pathlib import Path
work, out, steps_log, dry, total, elapsed = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5]), int(sys.argv[6])
steps = []
for line in steps_log.read_text().splitlines():
    name, rc, seconds, log = line.split("\t")
    tail = Path(log).read_text(errors="replace").replace("\r", "\n").splitlines()[-25:] if Path(log).is_file() else [log]
    steps.append({"step": name, "rc": int(rc), "status": "ok" if rc == "0" else "timed out" if rc == "124" else "failed",
                  "seconds": int(seconds), "output_tail": tail})
wanted = ["cross-device.json", "roundtrip.json", "kernels-cuda.json", "kernels-cpu.json", "speed-cuda.json",
          "speed-cpu.json", "train-throughput-cuda.json", "train-throughput-cpu.json",
          "run/best.safetensors", "run/last.pt", "run/log.jsonl"]
files, left_out = [], []
limit = 16 * 2**20
for rel in wanted:
    src = work / rel
    if not src.is_file():
        continue
    name = rel.replace("run/", "train-")
    if src.stat().st_size > limit or len(files) >= 7:            # run.json is the eighth
        left_out.append(f"{name} ({src.stat().st_size} bytes)")
        continue
    shutil.copy2(src, out / name)
    files.append(name)
summary = {"dry_run": dry, "budget_s": total, "elapsed_s": elapsed, "steps": steps, "files": files,
           "left_out": left_out, "ok": all(s["rc"] == 0 for s in steps)}
(out / "run.json").write_text(json.dumps(summary, indent=1))
print(f"\n{'step':<22}{'status':<11}{'s':>5}")
for s in steps:
    print(f"{s['step']:<22}{s['status']:<11}{s['seconds']:>5}")
print(f"{elapsed} s of {total}; wrote {len(files) + 1} files to {out}: run.json {' '.join(files)}"
      + (f"; left out: {', '.join(left_out)}" if left_out else ""))
EOF
rm -rf "$WORK"
exit $FAILED
