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
# Build choice. FUZZ_BUILD=release (the default here, for fuzzing sessions): cargo-fuzz's
# default, release with debug assertions, one codegen unit (cargo-fuzz forces it so sancov does
# not defeat ThinLTO), full debug info, AddressSanitizer: a clean build of the targets took
# 4 min 43 s on an idle 2-core machine and 7.5 min in a CI run. FUZZ_BUILD=dev (what .ci/run
# uses, FUZZ_SECONDS=8 each): cargo-fuzz's --dev build at opt-level 1 with line tables only and
# many codegen units (4 min 58 s in a CI run here); the same instrumentation, sanitizer and
# debug assertions, so a seed or input that panics, overflows or trips ASan fails exactly as in
# release, but executions are slower (1 100-100 000 a second per target). CI's few seconds per target are a regression check over the seeds, not a fuzzing
# campaign, so build time is the cost worth cutting there. FUZZ_SANITIZER=none drops ASan
# (panics, aborts and timeouts are still caught; streamgate forbids unsafe code).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-20}
sanitizer=${FUZZ_SANITIZER:-address}
build_mode=${FUZZ_BUILD:-release}
mode_flags=()
if [[ $build_mode == dev ]]; then
  mode_flags=(--dev)
  export CARGO_PROFILE_DEV_OPT_LEVEL=1 CARGO_PROFILE_DEV_DEBUG=line-tables-only
elif [[ $build_mode != release ]]; then
  echo "FUZZ_BUILD must be release or dev, not $build_mode" >&2
  exit 2
fi
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

printf '\n=== cargo fuzz build, %s, sanitizer %s (%ss)\n' "$build_mode" "$sanitizer" "$SECONDS"
cargo fuzz build "${mode_flags[@]}" --sanitizer "$sanitizer"

# New inputs found in a run go to a scratch directory, so the committed seeds stay small.
scratch=fuzz/corpus-run
failed=()
for target in "${targets[@]}"; do
  printf '\n=== fuzz %s for %ss (%ss)\n' "$target" "$seconds" "$SECONDS"
  rm -rf "fuzz/artifacts/$target"
  mkdir -p "$scratch/$target" "fuzz/corpus/$target"
  log=$(mktemp)
  if cargo fuzz run "${mode_flags[@]}" --sanitizer "$sanitizer" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
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
      echo "reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run ${mode_flags[*]} --sanitizer $sanitizer $target $input"
    done
  fi
  rm -f "$log"
done

if ((${#failed[@]})); then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} target(s), ${seconds}s each, no crash"
