"""The package as a user gets it: a wheel installed into a fresh venv works with its scenarios,
scripts and docs; the sdist is a clone's worth; install.sh puts the commands on PATH."""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from helpers import ROOT

from memtrackfs.mounts import read_mounts

SCENARIOS = sorted(path.stem for path in (ROOT / "vpu_sim" / "scenarios").glob("*.toml"))


def run(*command: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)}: {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("sdist")
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(dist)!r}))"
    return dist / run(sys.executable, "-c", code, cwd=ROOT).split()[-1]


@pytest.fixture(scope="module")
def wheel(sdist: Path) -> Path:
    """Built from the sdist, as `python -m build` does (and so nothing is built inside the clone)."""
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w",
        str(sdist.parent), str(sdist), cwd=sdist.parent)
    (built,) = sdist.parent.glob("memtrackfs-*.whl")
    return built


def test_a_wheel_in_a_fresh_venv_has_working_commands_scenarios_and_scripts(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # A fresh venv of the system's Python, outside the clone: nothing of the checkout is importable.
    run("python3", "-m", "venv", str(venv), cwd=tmp_path)
    run(str(venv / "bin/pip"), "install", "-q", "--disable-pip-version-check", str(wheel), cwd=tmp_path)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
           "MEMTRACKFS_RUNTIME_DIR": os.environ["MEMTRACKFS_RUNTIME_DIR"]}

    assert "settle" in run("memtrackfs", "--help", cwd=tmp_path, env=env)
    assert run("vpu-sim", "--version", cwd=tmp_path, env=env) == "vpu-sim 0.1.0\n"
    listed = run("vpu-sim", "scenario", "--list", cwd=tmp_path, env=env)
    assert [line.split()[0] for line in listed.splitlines()] == SCENARIOS
    site = next((venv / "lib").glob("python3*/site-packages"))
    scripts = dict(line.split() for line in run("memtrackfs", "scripts", cwd=tmp_path, env=env).splitlines())
    assert scripts == {"leakwatch.sh": str(site / "memtrackfs/data/scripts/leakwatch.sh"),
                       "rk-peak.sh": str(site / "memtrackfs/data/scripts/rk-peak.sh")}
    assert run("memtrackfs", "scripts", "leakwatch.sh", cwd=tmp_path, env=env) == \
        (ROOT / "scripts/leakwatch.sh").read_text()
    docs = site / "memtrackfs/data/docs"
    help_text = "".join(run("vpu-sim", "daemon", "--help", cwd=tmp_path, env=env).split())  # unwrapped
    assert str(docs / "scenarios.md") in help_text
    assert (docs / "scenarios.md").read_text() == (ROOT / "docs/scenarios.md").read_text()
    shipped, written = ({path.name for path in (where / "spec").glob("*.md")} for where in (docs, ROOT / "docs"))
    assert shipped == written
    assert (site / "memtrackfs/data/traces/amphion-board.trace").is_file()
    (license_file,) = site.glob("memtrackfs-*.dist-info/licenses/LICENSE")
    assert license_file.read_text() == (ROOT / "LICENSE").read_text()

    # And it works: a mount, and a built-in scenario on it, with nothing but the wheel.
    mnt = tmp_path / "mnt"
    run("memtrackfs", "mount", str(mnt), "--socket", str(tmp_path / "s.sock"), cwd=tmp_path, env=env)
    try:
        summary = run("vpu-sim", "scenario", "crash", "--mount", str(mnt), cwd=tmp_path, env=env)
        assert "scenario crash: done in" in summary and "killed by SIGKILL (crash fault)" in summary
    finally:
        run("memtrackfs", "umount", str(mnt), cwd=tmp_path, env=env)
    assert not [m for m in read_mounts() if m.mountpoint == str(mnt)]


def test_the_sdist_holds_the_license_docs_scenarios_scripts_and_tests(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        members = {member.name.split("/", 1)[1] for member in archive.getmembers() if "/" in member.name}
    expected = {"LICENSE", "README.md", "docs/scenarios.md", "docs/spec/trace-format.md", "scripts/install.sh",
                "memtrackfs/data/scripts/leakwatch.sh", "memtrackfs/data/scripts/rk-peak.sh",
                "memtrackfs/data/traces/amphion-board.trace", "examples/test_player_example.py",
                "tests/conftest.py", *(f"vpu_sim/scenarios/{name}.toml" for name in SCENARIOS)}
    assert expected <= members, sorted(expected - members)


def test_install_links_the_commands_into_a_bin_dir_once(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    env = {**os.environ, "MEMTRACKFS_BIN_DIR": str(bin_dir)}
    first = subprocess.run(["bash", str(ROOT / "scripts/install.sh")], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    for command in ("memtrackfs", "vpu-sim"):
        link = bin_dir / command
        assert os.readlink(link) == str(ROOT / ".venv/bin" / command)
        assert f"install.sh: linked {link} -> {ROOT / '.venv/bin' / command}" in first.stderr
    assert run(str(bin_dir / "vpu-sim"), "--version", cwd=tmp_path) == "vpu-sim 0.1.0\n"
    again = subprocess.run(["bash", str(ROOT / "scripts/install.sh")], env=env, capture_output=True, text=True)
    assert (again.returncode, again.stderr) == (0, "")  # nothing to do, nothing said
    (bin_dir / "vpu-sim").unlink()
    (bin_dir / "vpu-sim").write_text("#!/bin/sh\n")
    third = subprocess.run(["bash", str(ROOT / "scripts/install.sh")], env=env, capture_output=True, text=True)
    assert third.returncode == 0
    assert f"install.sh: {bin_dir / 'vpu-sim'} exists and is not a link: left alone" in third.stderr
