#!/usr/bin/env bash
# Fuzzes every parser of untrusted input (fuzz/, see fuzz/README.md) for a bounded time each,
# starting from the seed corpora in fuzz/corpus/<target>/. Exits non-zero when a target
# crashes, panics, times out or runs out of memory, after printing the input that did it.
#
#   bash .ci/fuzz.sh                 # every target, FUZZ_SECONDS (default 20) each
#   FUZZ_SECONDS=300 bash .ci/fuzz.sh ws_inflate config
#
# Stable toolchain: cargo-fuzz passes nightly-only flags (-Zsanitizer, -Cpasses=sancov),
# which RUSTC_BOOTSTRAP=1 lets the stable compiler accept. FUZZ_SANITIZER=none builds without
# AddressSanitizer (panics and aborts are still caught) if a toolchain lacks its runtime.
#
# Build choice (.ci/run runs this with FUZZ_SECONDS=8): cargo-fuzz's default, i.e. release
# with debug assertions and overflow checks, one codegen unit, AddressSanitizer. A clean build
# of the 8 targets took 4 min 43 s on an idle 2-core machine, the whole script 6 min 1 s (plus
# about 1 min the first time, to install cargo-fuzz): within the ~8 min CI can spend, so
# nothing is traded away. cargo-fuzz's --dev build at opt-level 1 (many codegen units, line
# tables only) was tried and is no cheaper: 4 min 58 s against 4 min 48 s for this release build,
# both clean, on the same quiet 2-core machine; most of the time is the dependencies' build. The cheapest cut, if needed, is FUZZ_SANITIZER=none: roughly 15-20%
# less build CPU, and panics, overflows, aborts and timeouts are still caught (only memory
# errors in dependencies' unsafe code go unseen; streamgate forbids unsafe code).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-20}
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

if ! command -v cargo-fuzz >/dev/null; then
  printf '\n=== cargo install cargo-fuzz (%ss)\n' "$SECONDS"
  cargo install cargo-fuzz --locked
fi

if (($#)); then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

printf '\n=== cargo fuzz build, sanitizer %s (%ss)\n' "$sanitizer" "$SECONDS"
cargo fuzz build --sanitizer "$sanitizer"

# New inputs found in a run go to a scratch directory, so the committed seeds stay small.
scratch=fuzz/corpus-run
failed=()
for target in "${targets[@]}"; do
  printf '\n=== fuzz %s for %ss (%ss)\n' "$target" "$seconds" "$SECONDS"
  rm -rf "fuzz/artifacts/$target"
  mkdir -p "$scratch/$target" "fuzz/corpus/$target"
  log=$(mktemp)
  if cargo fuzz run --sanitizer "$sanitizer" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
      -print_final_stats=1 >"$log" 2>&1; then
    # One line per target: executions, speed, coverage.
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb)' "$log" \
      | tr '\n' ' ' || true
    echo
  else
    failed+=("$target")
    tail -n 60 "$log"
    for input in "fuzz/artifacts/$target"/*; do
      [[ -f $input ]] || continue
      echo "--- crash input $input ($(wc -c <"$input") bytes), base64: $(base64 -w0 "$input")"
      od -A d -t x1z -v "$input" | head -n 64
      echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer $sanitizer $target $input"
    done
  fi
  rm -f "$log"
done

if ((${#failed[@]})); then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} target(s), ${seconds}s each, no crash"
