#!/usr/bin/env bash
# The main job: install what is missing, mount memtrackfs, start the simulated Amphion VPU
# (vpu_sim) and the default workload (two 1080p H.264 decodes, one exporting its frames to the
# display, and one 720p encode), show the files, and leave it all running.
# Usage: scripts/demo.sh [MOUNTPOINT]        start (default /tmp/memtrackfs)
#        scripts/demo.sh --stop [MOUNTPOINT] stop the workload and the daemon, unmount
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = "--stop" ]; then stopping=1; shift; else stopping=0; fi
mnt=$(realpath -m "${1:-/tmp/memtrackfs}")
state=/run/memtrackfs/demo-$(echo "$mnt" | tr / -)
bin="$top/.venv/bin"

stop_demo() {
  if [ -f "$state.pids" ]; then
    # Apps first, then the driver, as a board would shut down.
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$state.pids"
    sleep 0.5
    rm -f "$state.pids"
  fi
  if grep -q " $mnt .* fuse.memtrackfs " /proc/self/mountinfo 2>/dev/null; then
    "$bin/memtrackfs" umount "$mnt"
  fi
}

if [ "$stopping" = 1 ]; then
  stop_demo
  exit 0
fi

"$top/scripts/install.sh"
mkdir -p /run/memtrackfs
stop_demo  # a fresh board each run
"$bin/memtrackfs" mount "$mnt"

start() {  # start NAME ARGS...: run a vpu-sim command in the background, logging to $state.NAME.log
  local name=$1; shift
  nohup "$bin/vpu-sim" "$@" --mount "$mnt" > "$state.$name.log" 2>&1 &
  echo $! >> "$state.pids"
}
start daemon daemon --board imx8qxp
# vpu-sim prints its readiness line once its nodes are registered (see memtrackfs/launch.py).
for i in $(seq 400); do
  grep -q '^vpu-sim: ready:' "$state.daemon.log" && break
  if ! kill -0 "$(tail -n 1 "$state.pids")" 2>/dev/null || [ "$i" = 400 ]; then
    echo "demo.sh: vpu-sim daemon did not become ready (its log: $state.daemon.log):" >&2
    cat "$state.daemon.log" >&2
    exit 1
  fi
  sleep 0.05
done
start play1 play --codec h264 --size 1920x1080 --seconds 86400 --export-to display-subsystem
start play2 play --codec h264 --size 1920x1080 --seconds 86400
start encode encode --size 1280x720 --seconds 86400
sleep 2.5  # past the first frames and the control's 200 ms notify delay

show() { echo; echo "\$ $*"; "$@"; }
show cat "$mnt/sys/kernel/debug/v4l2-memtrack/amphion-vpu"
show cat "$mnt/proc/rk_dmabuf/size"
show cat "$mnt/proc/rk_dmabuf/peak"
echo
echo "V4L2_CID_MEMORY_USAGE as each application reads it (VIDIOC_G_EXT_CTRLS):"
for app in play1 play2 encode; do
  printf '  %-7s %s\n' "$app" "$(tail -n 1 "$state.$app.log")"
done
cat <<EOT

Everything keeps running. Look around:
  ls -R $mnt/dev $mnt/proc $mnt/sys
  cat $mnt/proc/rk_dmabuf/dev $mnt/sys/kernel/debug/dma_buf/bufinfo
  cat $mnt/dev/kmsg
  $bin/vpu-sim play --mount $mnt --seconds 5     # one more decoder instance
  tail -f $state.play1.log                        # an application's progress
Stop everything and unmount:
  $0 --stop $mnt
EOT
