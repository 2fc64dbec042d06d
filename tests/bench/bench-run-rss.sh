#!/usr/bin/env bash
# bench-run-rss: the memory of `inspectd run` with the default model (issue
# #15: at most 150 MiB, nothing allocated per frame on the hot path). Trains
# the default model (PatchCore, 320 px, 1 % coreset, mobilenetv2_100) on
# mvtec_bottle's good images (or takes MODEL), then runs the daemon on a
# files source replaying the bottle test images in a loop as fast as the
# workers take them (MQTT off, state and spool in a temporary folder), and
# samples /proc/PID/status every 0.5 s: VmHWM (peak) and VmRSS. "steady" is
# VmRSS after the warm-up (the first 25 % of the run) and at the end; a
# growth between them divided by the frames in between is what each frame
# leaves allocated. Prints numbers, never fails.
#
#   tests/bench/bench-run-rss.sh [SECONDS] [MODEL]     (default 30 s)
#   env: INSPECTD (default build/daemon/inspectd), INSP_SHARED_DIR (default
#        ../shared), WORKERS (default 0: one per CPU); SOURCE=files (default:
#        the bottle PNGs, 900x900, decoded per frame) or SOURCE=videotestsrc
#        (640x480 frames made by GStreamer, issue #15's "whole daemon"
#        figure); BROKER=1 publishes every result to a mosquitto this script
#        starts on a loopback port (default: MQTT off); OPENBLAS_CORETYPE and
#        INSP_NN pass through to inspectd.
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
secs=${1:-30}
model=${2:-}
inspectd=${INSPECTD:-$root/build/daemon/inspectd}
shared=${INSP_SHARED_DIR:-$root/../shared}
data=$shared/datasets/mvtec_bottle
backbone=$shared/models/mobilenetv2_100.safetensors

if [ ! -x "$inspectd" ] || [ ! -d "$data/test" ]; then
  echo "bench-run-rss: skipped: needs $inspectd and $data"
  exit 0
fi
tmp=$(mktemp -d /tmp/bench-run-rss.XXXXXX)
pid=
broker=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  if [ -n "$broker" ]; then kill "$broker" 2>/dev/null; wait "$broker" 2>/dev/null; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
if [ -z "$model" ]; then
  if [ ! -f "$backbone" ]; then
    echo "bench-run-rss: skipped: needs $backbone to train the default model"
    exit 0
  fi
  model=$tmp/model.safetensors
  "$inspectd" train --images "$data/train/good" --out "$model" --backbone "$backbone" \
    > "$tmp/train.out" 2>&1 || { echo "bench-run-rss: training failed"; tail -3 "$tmp/train.out"; exit 0; }
fi
mkdir -p "$tmp/state" "$tmp/spool"
case ${SOURCE:-files} in
  files) camera="source = files
location = $data/test/*/*.png
loop = true
fps = 0" ;;
  videotestsrc) camera="source = pipeline
pipeline = videotestsrc pattern=ball ! video/x-raw,width=640,height=480
fps = 0" ;;
  *) echo "bench-run-rss: SOURCE is files or videotestsrc, not '$SOURCE'"; exit 0 ;;
esac
mqtt="host ="
if [ "${BROKER:-0}" = 1 ]; then
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" > "$tmp/mosquitto.conf"
  mosquitto -c "$tmp/mosquitto.conf" > "$tmp/mosquitto.log" 2>&1 &
  broker=$!
  sleep 0.5
  mqtt="host = 127.0.0.1
port = $port"
fi
cat > "$tmp/run.conf" <<EOF
[station]
id = bench
state_dir = $tmp/state
[camera]
$camera
[model]
path = $model
workers = ${WORKERS:-0}
[mqtt]
$mqtt
[spool]
dir = $tmp/spool
EOF
core=$("$inspectd" --version | sed -n 's/^OpenBLAS core: \([^ ]*\).*/\1/p')
echo "bench-run-rss: $inspectd run, model $(basename "$model") ($(du -k "$model" | cut -f1) kB)," \
  "OpenBLAS core ${core:-unknown}, workers ${WORKERS:-0} (0 = one per CPU), source ${SOURCE:-files}," \
  "MQTT $([ "${BROKER:-0}" = 1 ] && echo "to mosquitto on port $port" || echo off), $secs s, load $(cut -d' ' -f1 /proc/loadavg)"
"$inspectd" run -v -c "$tmp/run.conf" > "$tmp/stdout" 2> "$tmp/stderr" &
pid=$!
t0=$(date +%s.%N)
: > "$tmp/samples"
while kill -0 "$pid" 2>/dev/null; do
  now=$(date +%s.%N)
  el=$(awk -v a="$t0" -v b="$now" 'BEGIN { print b - a }')
  if awk -v e="$el" -v s="$secs" 'BEGIN { exit !(e >= s) }'; then break; fi
  hwm=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$pid/status" 2>/dev/null)
  rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status" 2>/dev/null)
  frames=$(wc -l < "$tmp/stdout")
  [ -n "$rss" ] && echo "$el $hwm $rss $frames" >> "$tmp/samples"
  sleep 0.5
done
if ! kill -0 "$pid" 2>/dev/null; then
  echo "bench-run-rss: the daemon stopped early:"
  tail -5 "$tmp/stderr"
  exit 0
fi
kill -TERM "$pid"
wait "$pid" 2>/dev/null
pid=
awk -v secs="$secs" '
  { t[NR] = $1; hwm[NR] = $2; rss[NR] = $3; fr[NR] = $4; n = NR }
  END {
    if (n < 4) { print "bench-run-rss: too few samples"; exit }
    w = 1; while (w < n && t[w] < secs / 4) w++
    first = 0; while (first < n && fr[first + 1] == 0) first++
    printf "frames %d in %.1f s (%.1f/s after the first result)\n", fr[n], t[n],
      (fr[n] - fr[first + 1]) / (t[n] - t[first + 1] + 1e-9)
    printf "peak RSS (VmHWM) %d kB = %.1f MiB\n", hwm[n], hwm[n] / 1024
    printf "steady RSS: %d kB = %.1f MiB at %.1f s (%d frames), %d kB = %.1f MiB at %.1f s (%d frames)\n",
      rss[w], rss[w] / 1024, t[w], fr[w], rss[n], rss[n] / 1024, t[n], fr[n]
    if (fr[n] > fr[w])
      printf "growth after warm-up: %d kB over %d frames = %.3f kB/frame\n", rss[n] - rss[w],
        fr[n] - fr[w], (rss[n] - rss[w]) / (fr[n] - fr[w])
  }' "$tmp/samples"
exit 0
