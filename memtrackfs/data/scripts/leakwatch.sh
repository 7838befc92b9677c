#!/bin/sh
# leakwatch.sh: watch DMA memory before, while and after a command (or for a while) and say
# what grew: the Rockchip dma-buf total and the v4l2-memtrack trees, per instance and per name.
# POSIX sh (runs under dash and busybox sh); copy it to a board as is.
#
#   leakwatch.sh [-t THRESHOLD_KIB] [-i INTERVAL] -- COMMAND [ARG...]
#   leakwatch.sh [-t THRESHOLD_KIB] [-i INTERVAL] -d SECONDS
#
# Reads /proc/rk_dmabuf/size and /proc/rk_dmabuf/dev (Rockchip) and every
# /sys/kernel/debug/v4l2-memtrack/<root> (the v4l2-memtrack RFC), every INTERVAL seconds
# (default 0.5): once before COMMAND, while it runs, and once INTERVAL after it exits.
# ROOT=DIR reads DIR/proc/... and DIR/sys/... instead (a memtrackfs mount); process liveness is
# always checked in the real /proc.
#
# A leak is growth beyond THRESHOLD_KIB (default 0) of
#   - rk_dmabuf/size, from the first sample to the last;
#   - the memory in a tracker root's instances (the nodes right under the root, with all below
#     them), from the root's first view to its last. A root that appears during the run (its
#     driver probed) starts at its first view; one that goes (its driver removed) ends at its
#     last view. The root's own buffers (firmware, ...) count only for a root there at both ends:
#     a driver allocates them at probe and frees them at remove.
# Growth is reported per instance (tgid, "gone" when that process has exited), per buffer name
# inside the instances, and per dma-buf name (rk_dmabuf/dev: "<tgid>-<comm>" and exporter).
# Where /proc/mpp_service/sessions-summary exists (Rockchip), it also reports how the memory of
# each codec device's open sessions changed: a session left open holds its buffers (that memory
# is in rk_dmabuf/size too, so it is not counted twice).
# The report goes to stderr.
#
# Exit status: 0 nothing leaked; 1 a leak beyond the threshold; 2 bad usage; 3 nothing to watch
# (neither rk_dmabuf/size nor the v4l2-memtrack directory); 4 COMMAND failed, nothing leaked.

ROOT=${ROOT:-}
RK="$ROOT/proc/rk_dmabuf/size"
RKDEV="$ROOT/proc/rk_dmabuf/dev"
MPP="$ROOT/proc/mpp_service/sessions-summary"
MT="$ROOT/sys/kernel/debug/v4l2-memtrack"

usage() {
    [ $# -gt 0 ] && echo "leakwatch: $*" >&2
    cat >&2 <<'EOF'
usage: leakwatch.sh [-t THRESHOLD_KIB] [-i INTERVAL] -- COMMAND [ARG...]
       leakwatch.sh [-t THRESHOLD_KIB] [-i INTERVAL] -d SECONDS
  -t KIB      growth allowed before it is a leak (default 0)
  -i SECONDS  time between samples (default 0.5)
  -d SECONDS  watch for this long instead of around a command
  ROOT=DIR    read DIR/proc/rk_dmabuf/... and DIR/sys/kernel/debug/v4l2-memtrack/...
exit status: 0 no leak, 1 leak, 2 usage, 3 nothing to watch, 4 COMMAND failed (no leak)
EOF
    exit 2
}

# A positive number of seconds (fractions allowed where sleep(1) takes them: GNU, busybox).
is_seconds() {
    case $1 in ''|.|*[!0-9.]*|*.*.*) return 1 ;; esac
    awk -v x="$1" 'BEGIN { exit !(x + 0 > 0) }'
}

threshold=0
interval=0.5
duration=
while getopts t:i:d: opt; do
    case $opt in
        t) case $OPTARG in ''|*[!0-9]*) usage "-t takes whole KiB, not '$OPTARG'" ;; esac
           threshold=$OPTARG ;;
        i) is_seconds "$OPTARG" || usage "-i takes seconds > 0, not '$OPTARG'"
           interval=$OPTARG ;;
        d) is_seconds "$OPTARG" || usage "-d takes seconds > 0, not '$OPTARG'"
           duration=$OPTARG ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
if [ -n "$duration" ] && [ $# -gt 0 ]; then
    usage "give either -d SECONDS or -- COMMAND, not both"
fi
if [ -z "$duration" ] && [ $# -eq 0 ]; then
    usage "nothing to run: give -- COMMAND or -d SECONDS"
fi
if [ ! -r "$RK" ] && [ ! -d "$MT" ]; then
    echo "leakwatch: nothing to watch: neither $RK nor $MT exists" \
         "(no Rockchip rk_dmabuf, no v4l2-memtrack; debugfs needs root; ROOT='$ROOT')" >&2
    exit 3
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/leakwatch.XXXXXX") || exit 3
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
samples=0

# One v4l2-memtrack file as records: the root's total, the bytes of each instance (a node right
# under the root, by tgid), the bytes of each name inside instances, and the root's own bytes
# ("drv": the root node and its leaves). A node's own bytes are its usage less its children's.
# Each line is read from its end, whose format is fixed: [NAME ][[leaf] ][(tgid=T, pid=P) ]usage: N
# [ (count=C[, self=S])], so no name passes for a field; a line no deeper than a child of the last
# node (a name may start with spaces), and a "leaf" with a child was a node named "... [leaf]".
TREE_AWK='
BEGIN { gsub(/\n/, "\\n", root); gsub(/\t/, " ", root) }  # a file name may hold them; our records may not
NR == 1 { total = $4; next }
{
    match($0, /^ */); indent = RLENGTH
    tail = $0; sub(/ \(count=[0-9]+(, self=[0-9]+)?\)$/, "", tail)
    if (!match(tail, /(^| )usage: [0-9]+$/)) next  # part of a name holding a newline
    usage = substr(tail, RSTART); sub(/^ ?usage: /, "", usage)
    head = substr(tail, 1, RSTART - 1)
    tgid = "?"
    if (match(head, /(^| )\(tgid=-?[0-9]+, pid=-?[0-9]+\)$/)) {
        tgid = substr(head, RSTART); head = substr(head, 1, RSTART - 1)
        sub(/^ ?\(tgid=/, "", tgid); sub(/,.*$/, "", tgid)
    }
    leaf = 0
    if (match(head, /(^| )\[leaf\]$/)) { leaf = 1; head = substr(head, 1, RSTART - 1) }
    if (n > 0 && L[n] && int(indent / 2) == D[n] + 1) { L[n] = 0; N[n] = N[n] " [leaf]"; parent = D[n] }
    depth = 0
    if (n > 0) { depth = int(indent / 2); if (depth > parent + 1) depth = parent + 1; if (depth < 1) depth = 1 }
    name = substr(head, 2 * depth + 1); gsub(/\t/, " ", name)  # a tab would split our records
    if (name == "") name = "(unnamed)"
    n++; D[n] = depth; N[n] = name; L[n] = leaf; T[n] = tgid; U[n] = usage + 0; OWN[n] = usage + 0
    if (depth > 0) OWN[up[depth - 1]] -= usage
    up[depth] = n
    if (!leaf) parent = depth
}
END {
    if (NR == 0) exit  # the root went away between listing and reading
    print "root\t" root "\t" total
    for (i = 1; i <= n; i++) {
        if (D[i] == 0 || (D[i] == 1 && L[i])) { drv += OWN[i]; continue }
        if (D[i] == 1) { inst = T[i]; I[inst] += U[i] }
        NM[N[i]] += OWN[i]
    }
    print "drv\t" root "\t" drv + 0
    for (t in I) print "inst\t" root "\t" t "\t" I[t]
    for (k in NM) print "name\t" root "\t" k "\t" NM[k]
}'

# rk_dmabuf/dev: "%px %-16.16s %-16.16s %10lu KiB devices...", summed per name and exporter. The
# columns are bytes (a name may be cut inside a UTF-8 character): awk runs in the C locale.
RKDEV_AWK='
NR > 2 && /^[0-9a-f]/ {
    rest = substr($0, length($1) + 2)
    name = substr(rest, 1, 16); sub(/ +$/, "", name)
    exporter = substr(rest, 18, 16); sub(/ +$/, "", exporter)
    key = name " (" exporter ")"; gsub(/\t/, " ", key)  # a tab would split our records
    B[key] += substr(rest, 35, 10) * 1024
}
END { for (k in B) print "dbuf\t" k "\t" B[k] }'

# mpp_service/sessions-summary, either BSP's form, as KiB per device: 5.10's "<dev> Total: N
# KiB", or 6.1's per-session dump ("N: iova..iova (SIZE KiB|Bytes)" lines, then " device: <dev>").
MPP_AWK='
/ Total: [0-9]+ KiB$/ { M[$1] += $3; next }
/^session iova range dump:$/ { pending = 0; next }
/^ *[0-9]+: 0x/ { s = $0; sub(/^.*\( */, "", s); n = s + 0; if (s ~ /Bytes/) n = n / 1024; pending += n; next }
/^ device: / { M[$2] += pending; pending = 0; next }
END { for (d in M) print "mpp\t" d "\t" int(M[d]) }'

take_sample() {
    samples=$((samples + 1))
    {
        printf '@\t%s\n' "$samples"
        [ -r "$RK" ] && LC_ALL=C awk '/^Total:/ { print "rk\t" $2 * 1024 }' "$RK"
        [ -r "$RKDEV" ] && LC_ALL=C awk "$RKDEV_AWK" "$RKDEV"
        [ -r "$MPP" ] && LC_ALL=C awk "$MPP_AWK" "$MPP"
        for file in "$MT"/*; do
            [ -f "$file" ] && LC_ALL=C awk -v root="${file##*/}" "$TREE_AWK" "$file" 2>/dev/null
        done
    } >> "$tmp/samples"
}

# Every sample in order ("@" starts one): first and last views per root, peaks, the report.
REPORT_AWK='
BEGIN { FS = "\t"; limit = threshold * 1024 }
function end_sample(   r, k, parts) {
    if (s == 0) return
    for (r in CR) {
        if (!(r in FR)) {
            FR[r] = CR[r]; FD[r] = CD[r]; FS_[r] = s
            for (k in CI) { split(k, parts, SUBSEP); if (parts[1] == r) FI[k] = CI[k] }
            for (k in CN) { split(k, parts, SUBSEP); if (parts[1] == r) FN[k] = CN[k] }
        }
        for (k in LI) { split(k, parts, SUBSEP); if (parts[1] == r) delete LI[k] }
        for (k in LN) { split(k, parts, SUBSEP); if (parts[1] == r) delete LN[k] }
        for (k in CI) { split(k, parts, SUBSEP); if (parts[1] == r) LI[k] = CI[k] }
        for (k in CN) { split(k, parts, SUBSEP); if (parts[1] == r) LN[k] = CN[k] }
        LR[r] = CR[r]; LD[r] = CD[r]; LS[r] = s
        if (CR[r] > PR[r]) PR[r] = CR[r]
        if (s == 1) BEFORE[r] = 1
    }
    if (s == 1) { rk_before = rk; for (k in DB) DB1[k] = DB[k]; for (k in MP) MP1[k] = MP[k] }
    if (rk > rk_peak) rk_peak = rk
    split("", CR); split("", CD); split("", CI); split("", CN)
}
$1 == "@" { end_sample(); s = $2; rk = ""; split("", DB); split("", MP); next }
$1 == "mpp" { MP[$2] = $3; next }
$1 == "rk" { rk = $2; next }
$1 == "dbuf" { DB[$2] = $3; next }
$1 == "root" { CR[$2] = $3; next }
$1 == "drv" { CD[$2] = $3; next }
$1 == "inst" { CI[$2, $3] = $4; next }
$1 == "name" { CN[$2, $3] = $4; next }
function kib(b) { return sprintf("%d KiB", b / 1024) }
function signed(b) { return (b >= 0 ? "+" : "") b }
END {
    last = s; rk_after = rk
    for (r in CR) AFTER[r] = 1
    end_sample()
    leak = 0
    printf "leakwatch: %d samples, threshold %d KiB\n", last, threshold
    if (rk_before != "" || rk_after != "") {
        growth = rk_after - rk_before
        printf "rk_dmabuf/size: before %s, peak %s, after %s: %s KiB\n", kib(rk_before), kib(rk_peak), kib(rk_after), signed(int(growth / 1024))
        for (k in DB) if (DB[k] - DB1[k] != 0) printf "  dma-buf %s: %s KiB\n", k, signed(int((DB[k] - DB1[k]) / 1024))
        for (k in DB1) if (!(k in DB)) printf "  dma-buf %s: %s KiB\n", k, signed(int(-DB1[k] / 1024))
        if (growth > limit) { leak = 1; printf "leakwatch: LEAK: rk_dmabuf/size grew by %s\n", kib(growth) }
    }
    for (k in MP) if (MP[k] != MP1[k] + 0) printf "mpp_service %s: sessions hold %d KiB, before %d KiB%s\n", k, MP[k], MP1[k], (MP[k] > 0 ? " (sessions still open)" : "")
    for (k in MP1) if (!(k in MP)) printf "mpp_service %s: sessions hold 0 KiB, before %d KiB\n", k, MP1[k]
    for (r in FR) {
        steady = (r in BEFORE) && (r in AFTER)
        how = steady ? "" : ((r in BEFORE) ? ", removed during the run" : ((r in AFTER) ? ", loaded during the run" : ", loaded and removed during the run"))
        printf "v4l2-memtrack/%s: total %d, peak %d, then %d bytes (samples %d..%d%s)\n", r, FR[r], PR[r], LR[r], FS_[r], LS[r], how
        counted = 0
        for (k in LI) { split(k, parts, SUBSEP); if (parts[1] == r) { d = LI[k] - FI[k]; counted += d; if (d) report_tgid(parts[2], d) } }
        for (k in FI) { split(k, parts, SUBSEP); if (parts[1] == r && !(k in LI)) { counted -= FI[k]; report_tgid(parts[2], -FI[k]) } }
        for (k in LN) { split(k, parts, SUBSEP); if (parts[1] == r && LN[k] - FN[k] != 0) printf "  %s: %s bytes\n", parts[2], signed(LN[k] - FN[k]) }
        for (k in FN) { split(k, parts, SUBSEP); if (parts[1] == r && !(k in LN)) printf "  %s: %s bytes\n", parts[2], signed(-FN[k]) }
        if (LD[r] != FD[r]) printf "  %s own buffers: %s bytes%s\n", r, signed(LD[r] - FD[r]), steady ? "" : " (probe/remove: not counted)"
        if (steady) counted += LD[r] - FD[r]
        if (counted > limit) { leak = 1; printf "leakwatch: LEAK: %s grew by %d bytes (%s)\n", r, counted, kib(counted) }
    }
    if (!leak) print "leakwatch: no leak"
    exit leak
}
function report_tgid(t, d) {
    printf "  instance tgid=%s%s: %s bytes\n", t, (t != "?" && system("[ -d /proc/" t " ]") != 0) ? " (gone)" : "", signed(d)
}'

take_sample
status=0
if [ -n "$duration" ]; then
    count=$(awk -v d="$duration" -v i="$interval" 'BEGIN { n = int(d / i); if (n * i < d) n++; print n }')
    while [ "$count" -gt 0 ]; do
        sleep "$interval"
        take_sample
        count=$((count - 1))
    done
else
    # An asynchronous command gets /dev/null as stdin unless redirected: hand it ours (fd 3).
    exec 3<&0
    ( "$@" <&3 3<&-; echo $? > "$tmp/status.new"; mv "$tmp/status.new" "$tmp/status" ) &
    exec 3<&-
    while [ ! -f "$tmp/status" ]; do
        sleep "$interval"
        take_sample
    done
    wait
    status=$(cat "$tmp/status")
    # A process's files close (and drivers free) just after it exits: look once more, a bit later.
    sleep "$interval"
    take_sample
fi

LC_ALL=C awk -v threshold="$threshold" "$REPORT_AWK" "$tmp/samples" >&2
leak=$?
[ "$leak" -eq 1 ] && exit 1
[ "$leak" -ne 0 ] && exit 3
if [ "$status" -ne 0 ]; then
    echo "leakwatch: the command failed (exit status $status); nothing leaked" >&2
    exit 4
fi
exit 0
