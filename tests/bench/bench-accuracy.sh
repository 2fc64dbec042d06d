#!/usr/bin/env bash
# bench-accuracy: detector accuracy over seeds on every shared data set, for
# one training setting. For each set and seed: inspectd train on
# SET/train/good with the given options and --seed S, then inspectd eval on
# SET/test; prints one row per run, then per set the mean, the sample
# standard deviation and the range over the seeds of image AUROC, pixel
# AUROC and AUPRO, and the mean over the sets. A benchmark: prints numbers,
# never fails on a low score. Models go to a temporary folder and are removed.
#
#   tests/bench/bench-accuracy.sh [-s "0 1 2"] [-j 2] [-d "SET ..."] [-l LABEL] [-- TRAIN OPTION ...]
#   e.g. tests/bench/bench-accuracy.sh -- --size 320 --coreset 0.01
#        tests/bench/bench-accuracy.sh -l s448 -s "0 1 2 3" -- --size 448
#   -s: seeds (default 0 1 2), -j: runs at a time (default 2, each with one
#   OpenBLAS thread), -d: sets under $INSP_SHARED_DIR/datasets (default: all),
#   -l: a label for the lines (default: the options).
#   env: INSPECTD (default build/daemon/inspectd), INSP_SHARED_DIR (default
#        ../shared), INSP_BACKBONE (default the shared mobilenetv2_100).
set -uo pipefail

seeds="0 1 2" jobs=2 sets="" label=""
while getopts "s:j:d:l:" o; do
  case $o in
    s) seeds=$OPTARG ;;
    j) jobs=$OPTARG ;;
    d) sets=$OPTARG ;;
    l) label=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
inspectd=${INSPECTD:-build/daemon/inspectd}
shared=${INSP_SHARED_DIR:-../shared}
backbone=${INSP_BACKBONE:-$shared/models/mobilenetv2_100.safetensors}
[ -n "$sets" ] || sets=$(cd "$shared/datasets" 2>/dev/null && ls -d */ | tr -d / | tr '\n' ' ')
label=${label:-${*:-defaults}}
if [ ! -x "$inspectd" ] || [ ! -f "$backbone" ] || [ -z "$sets" ]; then
  echo "bench-accuracy: skipped: needs $inspectd, $backbone and $shared/datasets/*"
  exit 0
fi
tmp=$(mktemp -d /tmp/bench-accuracy.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
echo "bench-accuracy: $(date -u '+%F %T') UTC, load $(cut -d' ' -f1-3 /proc/loadavg)," \
  "$($inspectd --version | sed -n 's/^OpenBLAS core: \([^ ]*\).*/OpenBLAS core \1/p'), setting '$label'," \
  "seeds $seeds"

one() { # SET SEED OPTIONS...: prints "SET SEED image pixel aupro ms train_s"
  local set=$1 seed=$2 t0 t1
  shift 2
  local model=$tmp/$set-$seed.safetensors
  t0=$(date +%s.%N)
  if ! OPENBLAS_NUM_THREADS=1 "$inspectd" train -b "$backbone" -i "$shared/datasets/$set/train/good" \
      -o "$model" --seed "$seed" "$@" >"$tmp/$set-$seed.train" 2>&1; then
    echo "$set $seed train-failed: $(tail -1 "$tmp/$set-$seed.train")"
    return
  fi
  t1=$(date +%s.%N)
  if ! OPENBLAS_NUM_THREADS=1 "$inspectd" eval -q -m "$model" -d "$shared/datasets/$set" \
      -j "$tmp/$set-$seed.json" >"$tmp/$set-$seed.eval" 2>&1; then
    echo "$set $seed eval-failed: $(tail -1 "$tmp/$set-$seed.eval")"
    return
  fi
  rm -f "$model"
  /usr/bin/python3 - "$tmp/$set-$seed.json" "$set" "$seed" "$t0" "$t1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(sys.argv[2], sys.argv[3], "%.4f %.4f %.4f %.1f %.0f" % (
    r["image_auroc"], r["pixel_auroc"], r["aupro"], r["latency_ms"]["p50"],
    float(sys.argv[5]) - float(sys.argv[4])))
EOF
}

n=0
for set in $sets; do
  for seed in $seeds; do
    one "$set" "$seed" "$@" >"$tmp/row-$set-$seed" &
    n=$((n + 1))
    if [ $((n % jobs)) -eq 0 ]; then wait; fi
  done
done
wait
echo "set seed image_auroc pixel_auroc aupro p50_ms train_s"
cat "$tmp"/row-* | sort
cat "$tmp"/row-* | /usr/bin/python3 -c '
import statistics as st, sys
rows = {}
for line in sys.stdin:
    f = line.split()
    if len(f) == 7:
        rows.setdefault(f[0], []).append([float(x) for x in f[2:5]])
label = sys.argv[1]
print("setting: " + label)
print("%-14s %-30s %-30s %-30s" % ("set", "image AUROC mean±sd [min-max]", "pixel AUROC",
      "AUPRO"))
means = []
for s in sorted(rows):
    cols = list(zip(*rows[s]))
    cells = []
    for c in cols:
        sd = st.stdev(c) if len(c) > 1 else 0.0
        cells.append("%.4f±%.4f [%.4f-%.4f]" % (st.mean(c), sd, min(c), max(c)))
    means.append([st.mean(c) for c in cols])
    print("%-14s %-30s %-30s %-30s n=%d" % (s, *cells, len(rows[s])))
if means:
    print("%-14s %-30.4f %-30.4f %-30.4f" % ("mean of sets", st.mean(m[0] for m in means),
          st.mean(m[1] for m in means), st.mean(m[2] for m in means)))
' "$label"
