#!/usr/bin/env bash
# The main job: install what is missing, mount memtrackfs, feed it the sample workload (a replayed
# trace of an i.MX8QXP Amphion board), print the tree, and leave it mounted for you to explore.
# Usage: scripts/demo.sh [MOUNTPOINT]   (default /tmp/memtrackfs)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
mnt=${1:-/tmp/memtrackfs}
"$top/scripts/install.sh"
mtfs="$top/.venv/bin/memtrackfs"

# A fresh board each run: unmount a previous demo (a dead one is recovered by `mount` itself).
if grep -q " $(realpath -m "$mnt") .* fuse.memtrackfs " /proc/self/mountinfo 2>/dev/null \
   && ls "$mnt" >/dev/null 2>&1; then
  "$mtfs" umount "$mnt"
fi
"$mtfs" mount "$mnt"
"$mtfs" replay "$top/examples/amphion-board.trace" --mount "$mnt" >/dev/null

echo
echo "\$ cat $mnt/sys/kernel/debug/v4l2-memtrack/amphion-vpu"
cat "$mnt/sys/kernel/debug/v4l2-memtrack/amphion-vpu"
cat <<EOT

Look around:
  ls -R $mnt
  cat $mnt/dev/kmsg
  echo 'file v4l2-memtrack.c +p' > $mnt/sys/kernel/debug/dynamic_debug/control
  $mtfs replay YOUR.trace --mount $mnt
Unmount:
  $mtfs umount $mnt
EOT
