#!/usr/bin/env bash
# The scale sweep: `s3-blob-sync copy` of N small objects (4 KiB) and its no-change re-run, for
# each N, on the local stand-ins, to show whether the per-object figures stay flat as the
# bucket grows: objects/s, our CPU-seconds per object and peak RSS. Azurite keeps its data in
# memory here (its on-disk autosave slows with 100k rows, which would measure Azurite).
#
# Usage: bench/scale.sh [N ...]        (default: 1000 10000 100000; the 100k step takes ~20 min)
#        COUNT=1 bench/scale.sh ...    also counts requests per object by service, through
#                                      bench/latency_proxy.py with no added latency (the proxy
#                                      costs time of its own: compare rates without it)
# Needs: /usr/bin/time (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/proxied.sh
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000 100000)
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time; }
scripts/emulators stop >/dev/null 2>&1 || true
eval "$(AZURITE_IN_MEMORY=1 scripts/emulators start)"
cargo build --release --quiet --bins
bin=target/release/s3-blob-sync
unset AWS_CA_BUNDLE
export SYNC_COPY_PATH=streamed SYNC_LOG_FORMAT=json RUST_LOG=warn
results=bench/results-scale-$(date +%Y%m%d-%H%M%S).tsv
printf 'objects\trun\tseconds\tobjects_per_s\tcpu_s\tcpu_ms_per_object\tpeak_rss_kib\treq_per_obj_blob\treq_per_obj_table\treq_per_obj_s3\n' | tee "$results"

for n in "${sizes[@]}"; do
  bucket=scale-$n-$(date +%s)
  .tools/venv/bin/python bench/seed.py "$bucket" --small "$n" --small-size 4096 --medium 0 >/dev/null
  container=scale-$n-$RANDOM
  for run in first rerun; do
    tf=$(mktemp)
    via=()
    blob_port=10000
    if [ "${COUNT:-0}" = 1 ]; then
      start_proxy 0 "$tf.counts"
      via=(env AZURE_STORAGE_CONNECTION_STRING="$proxied_cs" AWS_ENDPOINT_URL="$proxied_s3")
      blob_port=20000
    fi
    /usr/bin/time -v -o "$tf" "${via[@]}" $bin copy "s3://$bucket/" "http://127.0.0.1:$blob_port/devstoreaccount1/$container/" \
      --concurrency 16 --no-progress --json >"$tf.out" 2>"$tf.err" || { echo "FAILED: $n $run" >&2; tail -5 "$tf.err" >&2; exit 1; }
    # The run must have settled every object: copied on the first pass, current on the re-run.
    want=$([ $run = first ] && echo transferred || echo noTransferNeeded)
    got=$(grep '^{' "$tf.out" | .tools/venv/bin/python -c "import json,sys; print(json.load(sys.stdin)['counters']['$want'])")
    [ "$got" = "$n" ] || { echo "$n $run: $want is $got, not $n" >&2; exit 1; }
    per="-\t-\t-"
    if [ "${COUNT:-0}" = 1 ]; then
      kill "$proxy"; wait "$proxy" 2>/dev/null || true
      per=$(.tools/venv/bin/python -c "import json,sys; c=json.load(open('$tf.counts')); print('\t'.join(f\"{c.get(s,{}).get('requests',0)/$n:.3f}\" for s in ('blob','table','s3')))")
    fi
    awk -F': ' -v n="$n" -v run="$run" -v per="$per" '
      /Elapsed \(wall clock\)/ { k=split($2,a,":"); s=0; for(i=1;i<=k;i++) s=s*60+a[i] }
      /User time/ { u=$2 } /System time/ { y=$2 } /Maximum resident set size/ { r=$2 }
      END { c=u+y; printf "%d\t%s\t%.2f\t%.0f\t%.2f\t%.3f\t%d\t%s\n", n, run, s, n/s, c, 1000*c/n, r, per }' "$tf" | tee -a "$results"
    rm -f "$tf" "$tf.out" "$tf.err" "$tf.counts"
  done
done
echo "results: $results"
