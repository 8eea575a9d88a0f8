#!/usr/bin/env bash
# First run (issue 23): what a new user meets, checked on a clean clone of HEAD. Every command of
# the ```sh blocks of README.md, examples/README.md and docs/LAB.md runs exactly as written, in
# order, against the gateway each starts (`cargo run --release -p streamgate -- serve`), each with
# a timeout, and must succeed; blocks or lines not meant to run (servers of your own, placeholders,
# what another CI step runs) say so with a `<!-- firstrun: … (reason) -->` marker, read by
# .ci/firstrun.py, which documents the markers.
#
# It reuses this checkout's build instead of building everything a second time: the clone's
# target/ is a link to this checkout's target directory (so `target/release/streamgate` in the
# docs is where they say), and when the working tree is exactly HEAD, each file of the clone gets
# its twin's modification time, so cargo finds the build fresh. A tree with changes leaves the
# clone's times alone: cargo then rebuilds the workspace's crates from the committed sources.
#
# Needs ports 8080, 8443 (TCP) and 4433 (UDP) of 127.0.0.1 free, like the README's gateway.
#   bash .ci/firstrun.sh [FILE.md ...]     (default: README.md examples/README.md docs/LAB.md)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
target=$(realpath -m "${CARGO_TARGET_DIR:-$repo/target}")
docs=("$@")
((${#docs[@]})) || docs=(README.md examples/README.md docs/LAB.md)
started=$SECONDS

for port in 8080 8443; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "firstrun: something already listens on 127.0.0.1:$port; the README's gateway needs it" >&2
    exit 1
  fi
done

clone=$(mktemp -d /tmp/streamgate-firstrun.XXXXXX)
cleanup() { rm -rf "$clone"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

git clone -q --no-hardlinks "$repo" "$clone/streamgate"
cd "$clone/streamgate"
git -c advice.detachedHead=false checkout -q "$(git -C "$repo" rev-parse HEAD)"
mkdir -p "$target"
ln -s "$target" target
if git -C "$repo" diff --quiet HEAD --; then
  # Each file's time from its twin in this checkout (same content: the tree is HEAD).
  git ls-files -z | python3 -c '
import os, sys
repo = sys.argv[1]
for path in sys.stdin.buffer.read().split(b"\0"):
    if path:
        twin = os.path.join(repo.encode(), path)
        if os.path.exists(twin):
            stat = os.stat(twin)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
' "$repo"
  echo "firstrun: clone of $(git rev-parse --short HEAD) in $PWD, reusing $target (times copied)"
else
  echo "firstrun: clone of $(git rev-parse --short HEAD) in $PWD, reusing $target;" \
    "this checkout has changes, so cargo rebuilds the workspace's crates"
fi

status=0
env -u CARGO_TARGET_DIR python3 "$repo/.ci/firstrun.py" "${docs[@]}" || status=$?
echo "firstrun: $((SECONDS - started)) s"
exit "$status"
