#!/usr/bin/env bash
# Installs what memtrackfs needs on Debian 12, idempotently: FUSE (libfuse2, which mfusepy and
# fusepy load, and fuse3 for fusermount3), gcc and headers (the device-node tests compile a V4L2
# client), socat and busybox (README examples, POSIX-sh checks), v4l-utils and ffmpeg (the real V4L2
# clients the device-node tests run; ffmpeg also makes their H.264 clips), htop, lsof, tmux, procps and
# util-linux (the tools the tests run inside `memtrackfs run`), then a .venv with the package,
# and (as root) links `memtrackfs` and `vpu-sim` into /usr/local/bin, so the README's commands
# work as printed. MEMTRACKFS_BIN_DIR=DIR links them into DIR instead.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "install.sh: $*" >&2; }

packages=(fuse3 libfuse2 libfuse3-dev pkg-config python3 python3-venv gcc libc6-dev linux-libc-dev socat busybox util-linux bsdutils procps kmod v4l-utils ffmpeg htop lsof tmux)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    say "these Debian packages are missing and installing them needs root: ${missing[*]}"
    exit 1
  fi
  say "installing Debian packages: ${missing[*]} (apt-get; a minute or two the first time)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -e /dev/fuse ]; then
  modprobe fuse 2>/dev/null || true
  [ -e /dev/fuse ] || { say "/dev/fuse is missing and 'modprobe fuse' did not create it"; exit 1; }
fi

if [ ! -x "$top/.venv/bin/python" ]; then
  say "creating the Python environment $top/.venv"
  python3 -m venv "$top/.venv"
fi
# pip runs when the project's metadata changed (dependencies, entry points), not on every run:
# the install is editable, so code changes need none.
stamp="$top/.venv/.memtrackfs-installed"
wanted=$(sha256sum "$top/pyproject.toml" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! "$top/.venv/bin/python" -c "import memtrackfs" 2>/dev/null; then
  say "installing memtrackfs and its Python packages into .venv (pip: mfusepy, psutil, prometheus_client, pytest, pytest-xdist, matplotlib; a minute the first time)"
  # compat: a plain path entry, so a directory named memtrackfs in the cwd (e.g. /tmp/memtrackfs, the
  # demo mount point) cannot shadow the package as a namespace package.
  "$top/.venv/bin/pip" install -q --disable-pip-version-check --config-settings editable_mode=compat -e "$top[test]" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  "$top/.venv/bin/python" -c "import memtrackfs, mfusepy, psutil, prometheus_client, pytest, xdist" \
    || { say "the Python packages did not install"; exit 1; }
  echo "$wanted" > "$stamp"
fi

# The commands on PATH: links to the venv's entry points (they run it whatever PATH says).
bin_dir=${MEMTRACKFS_BIN_DIR:-}
if [ -z "$bin_dir" ] && [ "$(id -u)" -eq 0 ]; then bin_dir=/usr/local/bin; fi
if [ -z "$bin_dir" ]; then
  say "to run memtrackfs and vpu-sim by name: export PATH=\"$top/.venv/bin:\$PATH\" (or run this as root)"
  exit 0
fi
mkdir -p "$bin_dir"
for command in memtrackfs vpu-sim; do
  target="$top/.venv/bin/$command" link="$bin_dir/$command"
  if [ -L "$link" ] && [ "$(readlink "$link")" = "$target" ]; then
    continue
  elif [ -e "$link" ] && [ ! -L "$link" ]; then
    say "$link exists and is not a link: left alone (run $target, or remove it and run install.sh again)"
  else
    ln -sfn "$target" "$link"
    say "linked $link -> $target"
  fi
done
