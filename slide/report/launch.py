"""Start (or resume) one training run: ``python -m slide.report.launch --out DIR -- COMMAND ...``.

The trainer is called with ``--resume``, so a job that was killed continues from ``DIR/model.npz``
and keeps the points already in ``DIR/curve.csv``. A checkpoint is only trusted when it was made
by the very same command line and the run did not finish: the command (``--resume`` and
``--threads`` aside) is recorded in ``DIR/command.json`` with ``finished`` set once the trainer
has written ``run.json``. When the command differs (the configuration changed) or the previous run
finished (Snakemake reruns it on purpose, e.g. ``--forcerun``), the old checkpoint and curve are
removed and the run starts afresh.

The exit status is the trainer's. A trainer that exits 0 without writing ``run.json`` is an error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STATE_FILES = ("model.npz", "curve.csv", "run.json")
IGNORED_FLAGS = {"--resume": 0, "--threads": 1, "--keep-going": 0}


def fingerprint(cmd: list[str]) -> list[str]:
    """The parts of the command that define the experiment (not how it is run)."""
    out, skip = [], 0
    for arg in cmd:
        if skip:
            skip -= 1
            continue
        if arg in IGNORED_FLAGS:
            skip = IGNORED_FLAGS[arg]
            continue
        out.append(arg)
    # the interpreter path may differ between machines (cluster vs. laptop)
    return out[1:] if out and out[0].endswith(("python", "python3")) else out


def _atomic_json(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def prepare_dir(out: Path, cmd: list[str]) -> str:
    """Clear state left by a different command; return what was done (for the log)."""
    out.mkdir(parents=True, exist_ok=True)
    record = out / "command.json"
    want = fingerprint(cmd)
    try:
        previous = json.loads(record.read_text())
        have, finished = previous.get("fingerprint"), bool(previous.get("finished"))
    except (OSError, ValueError, AttributeError):
        have, finished = None, False
    stale = [out / f for f in STATE_FILES if (out / f).exists()]
    action = "fresh start"
    if stale and (have != want or finished):
        for f in stale:
            f.unlink()
        why = "a finished run is rerun" if have == want else "the command changed"
        action = f"{why}: removed {', '.join(f.name for f in stale)}"
    elif (out / "model.npz").exists():
        action = "resuming an unfinished run from model.npz"
    _atomic_json(record, {"fingerprint": want, "command": cmd, "finished": False,
                          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return action


def mark_finished(out: Path) -> None:
    record = out / "command.json"
    data = json.loads(record.read_text())
    data.update(finished=True, ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    _atomic_json(record, data)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="the run directory (the trainer's --out)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the trainer's command line")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given after --")
    action = prepare_dir(args.out, cmd)
    print(f"launch: {args.out}: {action}", file=sys.stderr, flush=True)
    print("launch: " + " ".join(cmd), file=sys.stderr, flush=True)
    code = subprocess.call(cmd)
    if code == 0 and not (args.out / "run.json").exists():
        print(f"launch: the trainer exited 0 but wrote no {args.out}/run.json", file=sys.stderr)
        return 1
    if code == 0:
        mark_finished(args.out)
    return code


if __name__ == "__main__":
    sys.exit(main())
