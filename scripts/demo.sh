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
# The i.MX8QXP MEK's CMA area (arch/arm64/boot/dts/freescale/imx8qxp-mek.dts: linux,cma,
# size 0x3c000000): room for the workload and more decoders besides.
heaps=(--heap system --heap linux,cma=960M)

stop_demo() {
  if [ -f "$state.pids" ]; then
    # Apps first, then the driver, as a board would shut down; each waited for.
    while read -r pid; do
      kill "$pid" 2>/dev/null || continue
      for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    done < "$state.pids"
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
"$bin/memtrackfs" mount "$mnt" "${heaps[@]}"

declare -A pids
start() {  # start NAME ARGS...: run a vpu-sim command in the background, logging to $state.NAME.log
  local name=$1; shift
  nohup "$bin/vpu-sim" "$@" --mount "$mnt" > "$state.$name.log" 2>&1 &
  pids[$name]=$!
  echo $! >> "$state.pids"
}
wait_for_line() {  # wait_for_line NAME PATTERN: until NAME's log has a line matching PATTERN (20 s at most)
  local why="did not get there in 20 s"
  for _ in $(seq 400); do
    grep -qE "$2" "$state.$1.log" && return 0
    if ! kill -0 "${pids[$1]}" 2>/dev/null; then why="exited"; break; fi
    sleep 0.05
  done
  echo "demo.sh: vpu-sim $1 $why (its log: $state.$1.log):" >&2
  cat "$state.$1.log" >&2
  exit 1
}
start daemon daemon --board imx8qxp
wait_for_line daemon '^vpu-sim: ready:'  # its nodes are registered
start play1 play --codec h264 --size 1920x1080 --seconds 86400 --export-to display-subsystem
start play2 play --codec h264 --size 1920x1080 --seconds 86400
start encode encode --size 1280x720 --seconds 86400
for app in play1 play2 encode; do  # streaming, and the control updated (its 200 ms notify delay)
  wait_for_line "$app" 'memory usage [1-9][0-9]* bytes$'
done

show() { echo; echo "\$ $*"; "$@"; }
show cat "$mnt/sys/kernel/debug/v4l2-memtrack/amphion-vpu"
show cat "$mnt/proc/rk_dmabuf/size"
show cat "$mnt/proc/rk_dmabuf/peak"
echo
echo "V4L2_CID_MEMORY_USAGE as each application reads it (VIDIOC_G_EXT_CTRLS):"
for app in play1 play2 encode; do
  printf '  %-7s %s\n' "$app" "$(tail -n 1 "$state.$app.log")"
done
# By name if install.sh put them on PATH (as root), else from the venv.
if [ "$(command -v vpu-sim)" = "$bin/vpu-sim" ] || [ "$(readlink -f "$(command -v vpu-sim || true)")" = "$(readlink -f "$bin/vpu-sim")" ]; then
  vpu=vpu-sim mtfs=memtrackfs
else
  vpu="$bin/vpu-sim" mtfs="$bin/memtrackfs"
fi
cat <<EOT

Everything keeps running. Look around:
  ls -R $mnt/dev $mnt/proc $mnt/sys
  cat $mnt/proc/rk_dmabuf/dev $mnt/sys/kernel/debug/dma_buf/bufinfo
  cat $mnt/dev/kmsg                               # the kernel log; cat follows it, as on a board (Ctrl-C)
  $vpu play --mount $mnt --seconds 5     # one more decoder instance
  $mtfs snapshot --mount $mnt
  tail -f $state.play1.log                        # an application's progress
Stop everything and unmount:
  $0 --stop $mnt
EOT
