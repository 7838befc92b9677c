#!/bin/sh
# rk-peak.sh: the Rockchip dma-buf peak workflow around a command, with an optional limit.
# POSIX sh (runs under dash and busybox sh); copy it to a board as is.
#
#   rk-peak.sh [-l LIMIT_MIB] -- COMMAND [ARG...]
#
# As the Rockchip guide does it: `echo 0 > /proc/rk_dmabuf/peak`, run COMMAND, then read
# `cat /proc/rk_dmabuf/peak` ("Peak: N MiB"). The kernel moves the peak only when a buffer is
# exported, so it is the largest total any export during COMMAND reached, in whole MiB.
# ROOT=DIR reads DIR/proc/rk_dmabuf/... instead (a memtrackfs mount). The report goes to stderr.
#
# Exit status: 0 within the limit (or no limit); 1 the peak is over LIMIT_MIB; 2 bad usage;
# 3 rk_dmabuf/peak is missing or cannot be reset (not Rockchip, or not root);
# 4 COMMAND failed (peak within the limit).

ROOT=${ROOT:-}
PEAK="$ROOT/proc/rk_dmabuf/peak"
SIZE="$ROOT/proc/rk_dmabuf/size"

usage() {
    [ $# -gt 0 ] && echo "rk-peak: $*" >&2
    cat >&2 <<'USAGE'
usage: rk-peak.sh [-l LIMIT_MIB] -- COMMAND [ARG...]
  -l MIB    fail (exit 1) if the dma-buf peak during COMMAND exceeds MIB
  ROOT=DIR  read DIR/proc/rk_dmabuf/peak instead of /proc/rk_dmabuf/peak
exit status: 0 ok, 1 over the limit, 2 usage, 3 no rk_dmabuf/peak, 4 COMMAND failed
USAGE
    exit 2
}

limit=
while getopts l: opt; do
    case $opt in
        l) case $OPTARG in ''|*[!0-9]*) usage "-l takes whole MiB, not '$OPTARG'" ;; esac
           limit=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || usage "nothing to run: give -- COMMAND"

if [ ! -f "$PEAK" ]; then
    echo "rk-peak: $PEAK does not exist (not a Rockchip kernel with rk_dmabuf? ROOT='$ROOT')" >&2
    exit 3
fi
if ! { echo 0 > "$PEAK"; } 2>/dev/null; then
    echo "rk-peak: cannot reset $PEAK (writing it needs root)" >&2
    exit 3
fi

"$@"
status=$?

peak=$(awk '/^Peak:/ { print $2 }' "$PEAK")
size=$(awk '/^Total:/ { print $2 }' "$SIZE" 2>/dev/null)
echo "rk-peak: peak ${peak:-?} MiB${limit:+ (limit $limit MiB)}; total now ${size:-?} KiB" >&2
case $peak in ''|*[!0-9]*) echo "rk-peak: cannot read the peak from $PEAK" >&2; exit 3 ;; esac
if [ -n "$limit" ] && [ "$peak" -gt "$limit" ]; then
    echo "rk-peak: OVER THE LIMIT: $peak MiB > $limit MiB" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "rk-peak: the command failed (exit status $status)" >&2
    exit 4
fi
exit 0
