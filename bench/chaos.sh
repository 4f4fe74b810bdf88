#!/usr/bin/env bash
# The long soak of the chaos test (tests/it/chaos.rs): many seeds, many operations each,
# against fresh stand-ins. Prints one line per seed and ends with
# `seeds N, operations M, divergences 0`; a divergence stops it with the seed and the key,
# and `CHAOS_SEED=<seed> bench/chaos.sh` replays that seed alone.
#   CHAOS_SEEDS (default 20), CHAOS_OPS (default 2000), CHAOS_KEYS (default 24)
set -euo pipefail
cd "$(dirname "$0")/.."
export CHAOS_SEEDS=${CHAOS_SEEDS:-20} CHAOS_OPS=${CHAOS_OPS:-2000} CHAOS_KEYS=${CHAOS_KEYS:-24}
scripts/emulators stop
scripts/emulators start >/dev/null
trap 'scripts/emulators stop' EXIT
start=$SECONDS
log=$(mktemp)
status=0
cargo test --test it -- chaos::chaos_converges_for_every_seed --exact --nocapture >"$log" 2>&1 || status=$?
grep -E '^(seed|seeds|thread|test result)' "$log" || tail -40 "$log"
echo "chaos soak took $((SECONDS - start)) s (full output: $log)"
exit "$status"
