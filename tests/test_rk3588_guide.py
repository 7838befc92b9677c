"""The Rockchip DMABUF developer guide's two QA procedures (RK3588, Linux 5.10), run as written
(``cat``, ``echo 0 > /proc/rk_dmabuf/peak``) inside ``memtrackfs run --board rk3588``, and the
leak scripts on that board. The figures and how they compare with the guide's:
docs/spec/rockchip-rk3588.md."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

# Shell steps: wait (polling the files, as a tester watching them would) for a state.
HOME = """
vpu-sim compositor > /dev/null &
until [ "$(cat /proc/rk_dmabuf/size)" = "Total: 65552 KiB" ]; do sleep 0.05; done
"""


def until(condition: str) -> str:
    """Poll for ``condition`` at most 20 s, then go on (the next cat then shows what went wrong)."""
    return f"n=0; until {condition} || [ $n -ge 400 ]; do sleep 0.05; n=$((n + 1)); done\n"


def run_board(script: str, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memtrackfs", "run", "--board", "rk3588", *options, "--",
                           "sh", "-c", script], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=180)


def test_3_1_a_player_that_leaves_frames_behind_shows_in_rk_dmabuf_size() -> None:
    script = (HOME + "cat /proc/rk_dmabuf/size\n"
              "vpu-sim play --codec hevc --seconds 1 --export-to fdd90000.vop --keep-exports 60 > /dev/null\n"
              # Exit, clear history, back home: the player's session and fds are gone.
              + until('[ -z "$(cat /proc/mpp_service/sessions-summary)" ] && '
                      '[ "$(cat /proc/rk_dmabuf/size)" != "Total: 52140 KiB" ]')
              + until('[ "$(grep -c fdd90000.vop /proc/rk_dmabuf/dev)" = 15 ]')
              + "cat /proc/rk_dmabuf/size\n"
              "grep -c ' 4376 KiB fdd90000.vop$' /proc/rk_dmabuf/dev\n")
    done = run_board(script)
    assert done.returncode == 0, done.stderr
    # 65552 KiB at home; after: four 1080p HEVC frames (4 x 4376 KiB) a helper keeps on the VOP.
    assert done.stdout == "Total: 65552 KiB\nTotal: 83056 KiB\n4\n"


def test_3_2_the_peak_of_an_8k_playback_and_its_reset() -> None:
    script = (HOME + "vpu-sim play --codec hevc --size 7680x4320 --seconds 2 --playlist 2 "
                     "--export-to fdd90000.vop > /tmp/player.$$ &\n"
              + until("grep -q 'video 2 of 2' /tmp/player.$$")
              + until('[ "$(cat /proc/mpp_service/sessions-summary)" = "fdc38100.rkvdec-core Total: 689460 KiB" ]')
              + "cat /proc/mpp_service/sessions-summary\n"
                "cat /proc/rk_dmabuf/peak\n"
                "echo 0 > /proc/rk_dmabuf/peak\n"
                "cat /proc/rk_dmabuf/peak\n"
                "wait $!\n"
                "vpu-sim play --codec hevc --size 3840x2160 --seconds 0.5 > /dev/null\n"
                "cat /proc/rk_dmabuf/peak\n"
                "rm /tmp/player.$$\n")
    done = run_board(script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "fdc38100.rkvdec-core Total: 689460 KiB",  # one 8K HEVC session: 11 frames and its HAL buffers
        "Peak: 1410 MiB",     # the switch to the next video: two sessions and the home screen at once
        "Peak: 0 MiB",        # reset to 0, not to the total: it moves again at the next export
        "Peak: 229 MiB",      # the home screen and the next (4K) video's session
    ]


def test_the_6_1_bsp_dumps_each_session() -> None:
    script = ("vpu-sim play --codec hevc --size 7680x4320 --seconds 1.5 > /dev/null &\n"
              + until("grep -q ' memory: 673 MiB' /proc/mpp_service/sessions-summary")
              + "grep -c KiB /proc/mpp_service/sessions-summary\n"
                "grep ' device: ' /proc/mpp_service/sessions-summary\n"
                "grep ' memory: ' /proc/mpp_service/sessions-summary\n")
    done = run_board(script, "--bsp", "6.1")
    assert done.returncode == 0, done.stderr
    # 11 frames + 11 colmv + 3 RCB + 1 table + 3 packets: 29 buffers, 689460 KiB.
    assert done.stdout == "29\n device: fdc38100.rkvdec-core\n memory: 673 MiB\n"


def test_leakwatch_and_rk_peak_on_the_board() -> None:
    scenario = str(ROOT / "examples/scenarios/rk3588-buggy-player.toml")
    done = subprocess.run([sys.executable, "-m", "memtrackfs", "run", "--scenario", scenario, "--",
                           "sh", str(ROOT / "scripts/leakwatch.sh"), "-i", "0.2", "-d", "8"],
                          capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=180)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "leakwatch: LEAK: rk_dmabuf/size grew by 17504 KiB" in done.stderr
    peak = run_board(HOME + "sh scripts/rk-peak.sh -l 1024 -- vpu-sim play --codec hevc --size 7680x4320 "
                            "--seconds 1 --playlist 2 > /dev/null")
    assert peak.returncode == 1, peak.stderr
    assert "rk-peak: peak 1410 MiB (limit 1024 MiB); total now " in peak.stderr  # the player's release is async
    assert "rk-peak: OVER THE LIMIT: 1410 MiB > 1024 MiB" in peak.stderr
