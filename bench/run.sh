#!/usr/bin/env bash
# Benchmarks `s3-blob-sync copy` against `rclone copy` (Debian's rclone) on the same data in
# the same run, on the local stand-ins: wall time, objects/s, MB/s and peak RSS, for a first
# copy and a no-change re-run.
#
# Usage: bench/run.sh [small|medium|big|all|huge]   (big = one 1 GiB multipart object;
#        huge = one 5 GiB multipart object, first copies only, for the RSS bound; not in all)
# Needs: apt-get install rclone time (the script installs them if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
series=${1:-all}
command -v rclone >/dev/null && [ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq rclone time; }
scripts/emulators stop >/dev/null 2>&1 || true   # a fresh Azurite per run (its GC stalls it)
eval "$(scripts/emulators start)"
cargo build --release --quiet --bins --examples
bin=target/release/s3-blob-sync
unset AWS_CA_BUNDLE
export SYNC_COPY_PATH=streamed SYNC_LOG_FORMAT=json RUST_LOG=warn
conf=$(mktemp)
cat >"$conf" <<CONF
[s3]
type = s3
provider = Other
endpoint = $AWS_ENDPOINT_URL
access_key_id = $AWS_ACCESS_KEY_ID
secret_access_key = $AWS_SECRET_ACCESS_KEY
region = us-east-1
force_path_style = true

[az]
type = azureblob
use_emulator = true
endpoint = http://127.0.0.1:10000/devstoreaccount1
CONF
results=bench/results-$(date +%Y%m%d-%H%M%S).tsv
printf 'series\ttool\trun\tseconds\tobjects\tbytes\tpeak_rss_kib\n' >"$results"

measure() { # series tool run objects bytes -- command...
  local s=$1 t=$2 r=$3 n=$4 b=$5; shift 6
  local tf; tf=$(mktemp)
  /usr/bin/time -v -o "$tf" "$@" >/dev/null 2>"$tf.err" || { echo "FAILED: $*" >&2; tail -5 "$tf.err" >&2; }
  local secs rss
  secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$tf")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$s" "$t" "$r" "$secs" "$n" "$b" "$rss" | tee -a "$results"
}

run_series() { # name seed-args...
  local name=$1; shift
  local bucket=bench-$name-$(date +%s)
  .tools/venv/bin/python bench/seed.py "$bucket" "$@" >/dev/null
  local objects bytes
  read -r objects bytes < <(.tools/venv/bin/python -c '
import boto3, os, sys
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
n = b = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[1]):
    for o in page.get("Contents", []): n += 1; b += o["Size"]
print(n, b)' "$bucket")
  local ours=ours-$name-$RANDOM theirs=rclone-$name-$RANDOM
  measure "$name" s3-blob-sync first "$objects" "$bytes" -- \
    $bin copy "s3://$bucket/" "http://127.0.0.1:10000/devstoreaccount1/$ours/" --concurrency 16 --no-progress
  measure "$name" rclone first "$objects" "$bytes" -- \
    rclone --config "$conf" copy "s3:$bucket" "az:$theirs" --transfers 16 --checkers 16
  [ "$name" = huge ] && return   # the RSS bound is the point; re-runs and ceilings as for big
  measure "$name" s3-blob-sync rerun "$objects" "$bytes" -- \
    $bin copy "s3://$bucket/" "http://127.0.0.1:10000/devstoreaccount1/$ours/" --concurrency 16 --no-progress
  measure "$name" rclone rerun "$objects" "$bytes" -- \
    rclone --config "$conf" copy "s3:$bucket" "az:$theirs" --transfers 16 --checkers 16
  measure "$name" rclone rerun-fast-list-checksum "$objects" "$bytes" -- \
    rclone --config "$conf" copy "s3:$bucket" "az:$theirs" --transfers 16 --checkers 16 --fast-list --checksum
  # The emulators' own ceilings on the same data: raw concurrent GETs from moto, raw Put Block
  # into Azurite (same concurrency), so the copies read as a fraction of the limit.
  target/release/examples/ceiling "$bucket" "ceil-$name-$RANDOM" 16 | sed "s/^/$name\tceiling\t/" | tee -a "$results"
}

case $series in
  small|all) run_series small --small 2000 --small-size 4096 --medium 0 ;;&
  medium|all) run_series medium --small 0 --medium 20 --medium-size 8388608 ;;&
  big|all) run_series big --small 0 --medium 0 --big-mib 1024 ;;
  huge) run_series huge --small 0 --medium 0 --big-mib 5120 ;;
  small|medium) ;;
  *) echo "usage: bench/run.sh [small|medium|big|all]" >&2; exit 2 ;;
esac
echo "results: $results"
rm -f "$conf"
