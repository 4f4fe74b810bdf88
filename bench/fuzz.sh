#!/usr/bin/env bash
# Runs one cargo-fuzz target (fuzz/fuzz_targets/) for SECONDS and prints libFuzzer's figures.
#   bench/fuzz.sh TARGET SECONDS      e.g. bench/fuzz.sh s3_event 600
# cargo-fuzz needs nightly's -Z flags. With a nightly toolchain installed it uses it; without
# one it says so and uses the stable compiler with RUSTC_BOOTSTRAP=1 (which unlocks the same
# flags). The seed corpus is fuzz/corpus/TARGET (kept in the repo); findings go to
# fuzz/artifacts/TARGET. cargo-fuzz is installed, pinned, under .tools/.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: bench/fuzz.sh TARGET SECONDS}
seconds=${2:?usage: bench/fuzz.sh TARGET SECONDS}
CARGO_FUZZ_VERSION=0.12.0
tools=.tools/cargo-fuzz
if [ "$(cat "$tools/version" 2>/dev/null)" != "$CARGO_FUZZ_VERSION" ]; then
  cargo install --locked --root "$tools" --version "$CARGO_FUZZ_VERSION" cargo-fuzz >&2
  echo "$CARGO_FUZZ_VERSION" > "$tools/version"
fi
export PATH="$PWD/$tools/bin:$PATH"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  echo "bench/fuzz.sh: no nightly toolchain is installed; using stable with RUSTC_BOOTSTRAP=1" >&2
  toolchain=()
  export RUSTC_BOOTSTRAP=1
fi
# New inputs go to fuzz/work/TARGET (git-ignored); the kept seeds in fuzz/corpus/TARGET are read.
mkdir -p "fuzz/corpus/$target" "fuzz/work/$target"
cargo "${toolchain[@]}" fuzz run "$target" "fuzz/work/$target" "fuzz/corpus/$target" -- -max_total_time="$seconds" -print_final_stats=1 2>&1 \
  | grep -E 'stat::|ERROR|SUMMARY|panicked|Done [0-9]+ runs' || true
echo "findings: $(ls "fuzz/artifacts/$target" 2>/dev/null | wc -l) (fuzz/artifacts/$target)"
