#!/usr/bin/env bash
# bench-train: seconds and peak RSS of `inspectd train` on 666 real images at
# the defaults (PatchCore, 320 px, 1 % coreset, mobilenetv2_100), issue #15's
# training target: at most 66 s (the PyTorch peer's time for its 224 px model
# on 666 real images; there is no ONNX Runtime training to run beside it) and
# at most 600 MB. The 666 images are every train/good image of kolektorsdd
# (245) and mvtec_bottle (209) and the first 212 of mvtec_screw, linked (not
# copied) into a temporary folder under /tmp that is removed at the end.
# Prints the phases as inspectd train reports them, the wall time, the peak
# RSS (getrusage, as /usr/bin/time reports it), the load and the OpenBLAS
# core. A benchmark: prints numbers, never fails.
#
#   tests/bench/bench-train.sh [REPS]      (default 1)
#   env: INSPECTD (default build/daemon/inspectd), INSP_SHARED_DIR (default
#        ../shared); OPENBLAS_CORETYPE, INSP_CORESET_THREADS and
#        INSP_CORESET_PROJECTION pass through to inspectd.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
reps=${1:-1}
inspectd=${INSPECTD:-$root/build/daemon/inspectd}
shared=${INSP_SHARED_DIR:-$root/../shared}
backbone=$shared/models/mobilenetv2_100.safetensors
sets="kolektorsdd:0 mvtec_bottle:0 mvtec_screw:212"

if [ ! -x "$inspectd" ] || [ ! -f "$backbone" ] || [ ! -x /usr/bin/time ]; then
  echo "bench-train: skipped: needs $inspectd, $backbone and /usr/bin/time"
  exit 0
fi
tmp=$(mktemp -d /tmp/bench-train.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/images"
for s in $sets; do
  name=${s%%:*}
  take=${s##*:}
  dir=$shared/datasets/$name/train/good
  if [ ! -d "$dir" ]; then
    echo "bench-train: skipped: no $dir"
    exit 0
  fi
  n=0
  for f in "$dir"/*; do
    if [ "$take" -gt 0 ] && [ "$n" -ge "$take" ]; then
      break
    fi
    ln -s "$f" "$tmp/images/${name}_$(basename "$f")"
    n=$((n + 1))
  done
done
count=$(ls "$tmp/images" | wc -l)
core=$("$inspectd" --version | sed -n 's/^OpenBLAS core: \([^ ]*\).*/\1/p')
echo "bench-train: $count images, $inspectd, OpenBLAS core ${core:-unknown}" \
  "(OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}), $(nproc) processors"
echo "target: <= 66 s (PyTorch peer, 224 px, 666 real images), peak RSS <= 600 MB"
for r in $(seq 1 "$reps"); do
  load0=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M %U %S' -o "$tmp/time" \
    "$inspectd" train --images "$tmp/images" --out "$tmp/model.safetensors" \
    --backbone "$backbone" > "$tmp/out" 2> "$tmp/err"
  rc=$?
  t1=$(date +%s.%N)
  load1=$(cut -d' ' -f1 /proc/loadavg)
  if [ "$rc" -ne 0 ]; then
    echo "run $r: inspectd train failed ($rc):"
    tail -5 "$tmp/err"
    continue
  fi
  # the last progress line of each stage, with its time
  for st in sizes features "coreset 1/2" calibrate "coreset 2/2"; do
    line=$(grep "^train: $st " "$tmp/err" | tail -1)
    echo "  $line"
  done
  read -r kb user sys < "$tmp/time"
  awk -v r="$r" -v t0="$t0" -v t1="$t1" -v kb="$kb" -v u="$user" -v s="$sys" \
    -v l0="$load0" -v l1="$load1" 'BEGIN {
      printf "run %d: %.1f s wall (cpu %.1f s user + %.1f s sys), peak RSS %d kB = %.0f MiB = %.0f MB, load %s -> %s\n",
        r, t1 - t0, u, s, kb, kb / 1024, kb * 1.024 / 1000, l0, l1 }'
  grep -E '^(bank|time) ' "$tmp/out" | sed 's/^/  /'
done
exit 0
