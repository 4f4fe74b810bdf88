#!/usr/bin/env bash
# Scale-out: one bulk run of N small objects worked by 1, 2 and 4 `serve --work-queues`
# processes at once, as Function App instances share the queues. Every request to the
# stand-ins goes through bench/latency_proxy.py, which holds it LATENCY_MS (250) first, so the
# processes are bound by waiting, as they are against a far region, and not by this machine's
# two cores. For each process count: objects/s over the whole run (start to summary) and over
# its copy phase (first to last blob write, without the run's fixed start and finish), each
# with its ratio to one process, requests per object by service, and the 409/412 answers,
# inside transactions' bodies too (conflict retries).
#
# Usage: bench/scaleout.sh [PROCS ...]      (default: 1 2 4; N=800 LATENCY_MS=250 COPY_WORKERS=16)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/proxied.sh
procs=("$@")
[ ${#procs[@]} -gt 0 ] || procs=(1 2 4)
n=${N:-800}
latency=${LATENCY_MS:-250}
workers=${COPY_WORKERS:-16}
py=.tools/venv/bin/python
scripts/emulators stop >/dev/null 2>&1 || true
eval "$(AZURITE_IN_MEMORY=1 scripts/emulators start)"
cargo build --release --quiet --bins
bin=target/release/s3-blob-sync
results=bench/results-scaleout-$(date +%Y%m%d-%H%M%S).tsv
printf 'processes\tobjects\tseconds\tobjects_per_s\tvs_one\tcopy_phase_s\tcopy_objects_per_s\tcopy_vs_one\treq_per_obj_blob\treq_per_obj_queue\treq_per_obj_table\treq_per_obj_s3\tconflicts_409_412\n' | tee "$results"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
one=""

for p in "${procs[@]}"; do
  tag=so$p$RANDOM
  bucket=scaleout-$tag
  .tools/venv/bin/python bench/seed.py "$bucket" --small "$n" --small-size 4096 --medium 0 >/dev/null
  counts=$(mktemp)
  start_proxy "$latency" "$counts"
  pids=("$proxy")
  ports=()
  for i in $(seq 1 "$p"); do
    port=$((17100 + i))
    ports+=("$port")
    env AZURE_STORAGE_CONNECTION_STRING="$proxied_cs" AWS_ENDPOINT_URL="$proxied_s3" \
      FUNCTIONS_CUSTOMHANDLER_PORT=$port SYNC_COPY_PATH=streamed SYNC_LOG_FORMAT=json RUST_LOG=warn \
      SYNC_RUNS_TABLE=runs$tag SYNC_CHECKPOINT_TABLE=ckpt$tag SYNC_COPY_QUEUE=copy-$tag SYNC_LIST_QUEUE=list-$tag \
      SYNC_REJECT_QUEUE=rejects-$tag SYNC_RUN_CHECK_SECS=1 \
      $bin serve --work-queues --copy-workers "$workers" >"/tmp/scaleout-$tag-$i.log" 2>&1 &
    pids+=($!)
  done
  for port in "${ports[@]}"; do
    for _ in $(seq 1 150); do curl -fs "http://127.0.0.1:$port/" >/dev/null 2>&1 && break; sleep 0.2; done
  done
  start=$(date +%s.%N)
  id=$(curl -fs -X POST "http://127.0.0.1:${ports[0]}/api/runs" -H 'content-type: application/json' \
    -d "{\"source\":{\"bucket\":\"$bucket\"},\"target\":{\"container\":\"c-$tag\"}}" \
    | $py -c 'import json,sys; print(json.load(sys.stdin)["runId"])')
  while :; do
    code=$(curl -s -o "/tmp/scaleout-$tag.json" -w '%{http_code}' "http://127.0.0.1:${ports[0]}/api/runs/$id")
    [ "$code" = 200 ] && break
    sleep 0.5
  done
  end=$(date +%s.%N)
  cleanup
  wait 2>/dev/null || true
  transferred=$($py -c "import json; s=json.load(open('/tmp/scaleout-$tag.json')); print(s['counters']['transferred'], s['state'])")
  [ "$transferred" = "$n Succeeded" ] || { echo "$p processes: $transferred, not $n Succeeded" >&2; exit 1; }
  $py - "$counts" "$p" "$n" "$start" "$end" "$one" <<'EOF' | tee -a "$results"
import json, sys
counts, p, n, start, end, one = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
c = json.load(open(counts))
secs = end - start
rate = n / secs
per = lambda s: c.get(s, {}).get("requests", 0) / n
conflicts = sum(v.get("conflicts", 0) for v in c.values())
phase = c["blob"]["last"]["PUT"] - c["blob"]["first"]["PUT"]
copy_rate = n / phase
base = one.split(",") if one else None
vs = rate / float(base[0]) if base else 1.0
copy_vs = copy_rate / float(base[1]) if base else 1.0
print(f"{p}\t{n}\t{secs:.1f}\t{rate:.1f}\t{vs:.2f}\t{phase:.1f}\t{copy_rate:.1f}\t{copy_vs:.2f}\t{per('blob'):.2f}\t{per('queue'):.2f}\t{per('table'):.2f}\t{per('s3'):.2f}\t{conflicts}")
EOF
  rates=$(tail -1 "$results" | cut -f4,7 --output-delimiter=,)
  [ -n "$one" ] || one=$rates
  rm -f "$counts"
done
echo "results: $results"
