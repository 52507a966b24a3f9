#!/usr/bin/env bash
# Everything measured on a lent GPU, in one call: start-up costs, data cache, step throughput
# (eager and CUDA graphs), the seed.yaml and default.yaml runs (wall time, seconds per epoch),
# the default recipe's seed spread and a full-width ResNet-18 for comparison.
# Run from the repo root with the data copied to .data/ (git-ignored) and MONAI's wheel in .whl/:
#   bash benchmarks/gpu_session.sh                      every stage
#   STAGES="env cache steps seed default" bash benchmarks/gpu_session.sh
#   STAGES="cache members signal pack" CACHE_SIZES=224 bash benchmarks/gpu_session.sh   crop: content against none,
#       default.yaml, seeds 1 2 3 (SEEDS="4 5" for more), six runs at once; two members of each back
#       (benchmarks/gpu_pack.py), the reports of all
#   QUICK=1 bash benchmarks/gpu_session.sh              tiny runs, to check the script on a CPU
# Logs and reports go to $OUT (or runs/gpu-session): session.log, results.tar.gz, and the
# seed-0 default model as model-default-s0.tar.
set -u
export PYTHONUNBUFFERED=1 PNEUMO_DATA=${PNEUMO_DATA:-.data} PNEUMO_CACHE=${PNEUMO_CACHE:-/tmp/pneumo-cache}
OUT=${OUT:-runs/gpu-session}
STAGES=${STAGES:-"env data cache steps seed default spread resnet18"}
mkdir -p "$OUT" runs/gpu; rm -f runs/gpu/STOP
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:src
fi
quick=(); sizes=(128 180 224); steps=30
[ "${QUICK:-0}" = 1 ] && quick=(--set limit=300 --set epochs=2) && sizes=(128) && steps=2
py=python3
TIMEFORMAT="wall %R s"
log() { echo "=== $(date +%T) $*" | tee -a "$OUT/session.log"; }
run() { log "$*"; { time "$@" ; } 2>&1 | tee -a "$OUT/session.log"; }
pack() { tar czf "$OUT/results.tar.gz" --exclude='*.safetensors' runs/gpu "$OUT/session.log" 2>/dev/null; }
member() {  # one default.yaml member (crop $1, seed $2), its log in $OUT; retried without CUDA graphs if it fails
  export OMP_NUM_THREADS=${MEMBER_THREADS:-2}  # six runs share the cores
  local args=(--config default --set data="$PNEUMO_DATA" --set seed="$2" --set crop="$1" --set outliers=none "${quick[@]}" --overwrite --quiet --out "runs/gpu/$1-s$2")
  { time { $py -m pneumo train "${args[@]}" || { [ ! -e runs/gpu/STOP ] && $py -m pneumo train "${args[@]}" --set cuda_graphs=false; }; } ; } > "runs/gpu/train-$1-s$2.log" 2>&1
}
train() { run $py -m pneumo train --set data="$PNEUMO_DATA" "${quick[@]}" --overwrite --quiet "$@"; pack; }

for stage in $STAGES; do
  case $stage in
    env)
      nvidia-smi -L 2>&1 | tee -a "$OUT/session.log"
      run $py -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)"
      run $py -c "import torch; torch.zeros(1, device='cuda'); print('CUDA ready')"
      run $py -c "import pneumo.training" ;;
    data) run $py benchmarks/bench_data.py --sizes "${sizes[@]}" ;;
    cache) run $py -c "from pneumo.data.layout import discover; from pneumo.data.cache import cached_images
for s in (${CACHE_SIZES:-180, 224},): cached_images(discover('$PNEUMO_DATA').split('train'), s, progress=False)" ;;
    steps) run $py benchmarks/bench_train.py steps --models seed_cnn resnet18_half resnet18 --sizes "${sizes[@]}" --batch 32 --steps "$steps" ;;
    seed) train --config seed --out runs/gpu/seed-s0 ;;
    default)
      train --config default --out runs/gpu/default-s0
      tar cf "$OUT/model-default-s0.tar" runs/gpu/default-s0/model ;;
    spread)
      for seed in 1 2; do train --config default --set seed=$seed --out runs/gpu/default-s$seed; done
      run $py benchmarks/seed_spread.py --config default --seeds 0 1 2 --out runs/gpu ;;
    members)  # the content crop against none, 3 seeds each, all six runs at once on the one GPU
      log "members"
      for crop in none content; do for seed in ${SEEDS:-1 2 3}; do member $crop $seed & done; done
      ( sleep "${MEMBERS_LIMIT:-330}"; touch runs/gpu/STOP; pkill -f "pneumo train" ) & watchdog=$!  # leave time to pack what finished
      wait $(jobs -p | grep -v "^$watchdog$"); kill $watchdog 2>/dev/null
      tail -n 4 runs/gpu/train-*.log | tee -a "$OUT/session.log" ;;
    signal)
      finished() { for r in "$@"; do [ -e "$r/val_report.json" ] && echo "$r"; done; }
      for crop in none content; do
        run timeout 80 $py -m pneumo ensemble $(finished runs/gpu/$crop-s{1,2,3}) --out runs/gpu/ens3-$crop --overwrite
      done
      run $py benchmarks/signal_table.py $(finished runs/gpu/{none,content}-s{1,2,3} runs/gpu/ens3-{none,content}) --shifts ;;
    pack) run $py benchmarks/gpu_pack.py runs/gpu "$OUT" ;;
    resnet18) train --config default --set model=resnet18 --out runs/gpu/default-resnet18-s0 ;;
  esac
done
pack
log done
