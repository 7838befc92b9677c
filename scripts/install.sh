#!/usr/bin/env bash
# Installs what memtrackfs needs on Debian 12, idempotently: FUSE (libfuse2, which mfusepy and
# fusepy load, and fuse3 for fusermount3), gcc and headers (the device-node tests compile a V4L2
# client), socat and busybox (README examples, POSIX-sh checks), v4l-utils and ffmpeg (the real V4L2
# clients the device-node tests run; ffmpeg also makes their H.264 clips), then a .venv with the package.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)

packages=(fuse3 libfuse2 libfuse3-dev pkg-config python3 python3-venv gcc libc6-dev linux-libc-dev socat busybox util-linux procps kmod v4l-utils ffmpeg)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
  fi
  echo "install.sh: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
  [ -e /dev/fuse ] || { echo "install.sh: /dev/fuse is missing and 'modprobe fuse' did not create it" >&2; exit 1; }
fi

if [ ! -x "$top/.venv/bin/python" ]; then
  python3 -m venv "$top/.venv"
fi
# compat: a plain path entry, so a directory named memtrackfs in the cwd (e.g. /tmp/memtrackfs, the
# demo mount point) cannot shadow the package as a namespace package.
"$top/.venv/bin/pip" install -q --disable-pip-version-check --config-settings editable_mode=compat -e "$top[test]" 2>&1 | grep -v '^WARNING: Location' >&2 || true
"$top/.venv/bin/python" -c "import memtrackfs, mfusepy, psutil, pytest" \
  || { echo "install.sh: the Python packages did not install" >&2; exit 1; }
