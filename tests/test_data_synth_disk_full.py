"""`slide data synth` on a full disk: one line, exit non-zero, no half-written stand-in (issue 10, item 8)."""

import resource
import subprocess
import sys


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # writes past 200 kB fail with EFBIG


def test_synth_on_a_full_disk_is_one_line_and_leaves_no_stand_in(tmp_path):
    out = tmp_path / "stand-in"
    proc = subprocess.run([sys.executable, "-m", "slide.cli", "data", "synth", "--like", "amazon-670k",
                           "--scale", "0.01", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    # no temporary left, and no synth.json: the next run regenerates instead of trusting a torn stand-in
    assert not (out / "synth.json").exists()
    assert not [p for p in out.iterdir() if ".tmp" in p.name] if out.exists() else True
