#!/usr/bin/env bash
# bench-ort: inspectd against ONNX Runtime on the same PatchCore model, in the
# same run, one table. Trains mvtec_bottle with a 1 % coreset at 224 and 320
# px (mobilenetv2_100 to blocks.4, the graph of
# $INSP_SHARED_DIR/bench/onnxruntime), then takes the p50 latency of one
# image at a time with 1 and 2 threads: `inspectd eval` (resize + backbone +
# aggregation + nearest neighbour + anomaly map, decode excluded) and
# ONNX Runtime's bench.mjs (backbone + aggregation + nearest neighbour on a
# preprocessed input). Each side runs REPS times, interleaved; the table
# shows the median of the p50s. A benchmark: prints numbers, never fails.
#
#   tests/bench/bench-ort.sh [REPS]      (default 3)
#   env: INSPECTD (default build/daemon/inspectd), INSP_SHARED_DIR (default
#        ../shared), ORT_MODULES (default /tmp/ort/node_modules), INSP_NN
#        and OPENBLAS_CORETYPE pass through to inspectd.
# ONNX Runtime is skipped with a message when onnxruntime-node is not there:
#   npm install --prefix /tmp/ort --no-audit --no-fund \
#     --onnxruntime-node-install=skip onnxruntime-node@1.31.1
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
reps=${1:-3}
inspectd=${INSPECTD:-$root/build/daemon/inspectd}
shared=${INSP_SHARED_DIR:-$root/../shared}
ort_modules=${ORT_MODULES:-/tmp/ort/node_modules}
data=$shared/datasets/mvtec_bottle
backbone=$shared/models/mobilenetv2_100.safetensors
ortdir=$shared/bench/onnxruntime
sizes="224 320"

if [ ! -x "$inspectd" ] || [ ! -d "$data/train/good" ] || [ ! -f "$backbone" ]; then
  echo "bench-ort: skipped: needs $inspectd, $data and $backbone"
  exit 0
fi
have_ort=1
if ! command -v node >/dev/null || [ ! -d "$ort_modules/onnxruntime-node" ] || [ ! -f "$ortdir/bench.mjs" ]; then
  have_ort=0
  echo "bench-ort: ONNX Runtime not measured: no node or no $ort_modules/onnxruntime-node" \
    "(npm install --prefix /tmp/ort --no-audit --no-fund --onnxruntime-node-install=skip onnxruntime-node@1.31.1)"
fi

tmp=$(mktemp -d /tmp/bench-ort.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

core=$("$inspectd" --version | sed -n 's/^OpenBLAS core: //p')
echo "bench-ort: $(date -u '+%F %T') UTC, load $(cut -d' ' -f1-3 /proc/loadavg)," \
  "OpenBLAS core ${core:-unknown}," \
  "INSP_NN=${INSP_NN:-default}, $reps runs per cell"

for s in $sizes; do
  if ! "$inspectd" train --images "$data/train/good" --out "$tmp/bottle-$s.st" --backbone "$backbone" \
      --size "$s" --coreset 0.01 >"$tmp/train-$s.log" 2>&1; then
    echo "bench-ort: training at $s px failed:"
    tail -5 "$tmp/train-$s.log"
    exit 0
  fi
done

# p50 of one inspectd eval run: size threads -> stdout
inspectd_p50() {
  if "$inspectd" eval -q --model "$tmp/bottle-$1.st" --dataset "$data" --threads "$2" \
      --json "$tmp/e.json" >/dev/null 2>"$tmp/eval.log"; then
    python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.2f %.4f %.4f" % (j["latency_ms"]["p50"], j["image_auroc"], j["pixel_auroc"]))' "$tmp/e.json"
  else
    echo "nan nan nan"
  fi
}

for _ in $(seq "$reps"); do
  for s in $sizes; do
    for t in 1 2; do
      echo "$s $t $(inspectd_p50 "$s" "$t")" >>"$tmp/inspectd.txt"
    done
  done
  if [ "$have_ort" = 1 ]; then
    ORT_MODULES=$ort_modules node "$ortdir/bench.mjs" --sizes 224,320 --runs 200 >>"$tmp/ort.jsonl" 2>"$tmp/ort.log" \
      || { echo "bench-ort: ONNX Runtime run failed:"; tail -3 "$tmp/ort.log"; }
  fi
done

python3 - "$tmp" "$have_ort" <<'EOF'
import json, math, os, statistics, struct, sys
tmp, have_ort = sys.argv[1], sys.argv[2] == "1"
med = lambda v: statistics.median(v) if v else math.nan
ins = {}
for line in open(os.path.join(tmp, "inspectd.txt")):
    s, t, p50, img, pix = line.split()
    ins.setdefault((int(s), int(t)), []).append((float(p50), img, pix))
ort, ort_tp = {}, {}
if have_ort and os.path.exists(os.path.join(tmp, "ort.jsonl")):
    for line in open(os.path.join(tmp, "ort.jsonl")):
        j = json.loads(line)
        if j.get("mode") == "latency":
            ort.setdefault((j["S"], j["threads"]), []).append(j["latency_ms"]["p50"])
        elif j.get("mode") == "throughput":
            ort_tp.setdefault(j["S"], []).append(j["throughput"]["img_per_s"])
def bank_rows(s):
    with open(os.path.join(tmp, "bottle-%d.st" % s), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))["patchcore.memory_bank"]["shape"][0]
f = lambda v: "%.1f" % v if not math.isnan(v) else "-"
print()
print("| S | bank | inspectd 1 thr | inspectd 2 thr | ORT 1 thr | ORT 2 thr | inspectd best / ORT best | target | image / pixel AUROC |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
for s in (224, 320):
    i1 = med([x[0] for x in ins.get((s, 1), [])]); i2 = med([x[0] for x in ins.get((s, 2), [])])
    o1 = med(ort.get((s, 1), [])); o2 = med(ort.get((s, 2), []))
    best_i, best_o = min(i1, i2), min(o1, o2)
    ratio = "%.2fx" % (best_i / best_o) if not math.isnan(best_o) else "-"
    target = "<= %.1f ms" % (0.7 * best_o) if not math.isnan(best_o) else "-"
    acc = ins.get((s, 1), [(0, "-", "-")])[0]
    print("| %d | %d | %s | %s | %s | %s | %s | %s | %s / %s |" % (
        s, bank_rows(s), f(i1), f(i2), f(o1), f(o2), ratio, target, acc[1], acc[2]))
print()
print("p50 ms per image, median over runs (inspectd p50s: %s; ORT: %s)." % (
    "; ".join("%d/%d thr %s" % (k[0], k[1], " ".join(f(x[0]) for x in v)) for k, v in sorted(ins.items())),
    "; ".join("%d/%d thr %s" % (k[0], k[1], " ".join(f(x) for x in v)) for k, v in sorted(ort.items())) or "not run"))
if ort_tp:
    print("ORT 2 sessions x 1 thread: " + ", ".join("%d px %.0f images/s" % (s, med(v)) for s, v in sorted(ort_tp.items())))
EOF
exit 0
