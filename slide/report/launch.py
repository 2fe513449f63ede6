"""Start (or resume) one training run: ``python -m slide.report.launch --out DIR -- COMMAND ...``.

Without ``--out`` the command is only supervised (see the last paragraph); benchmark jobs use that.

The trainer is called with ``--resume``, so a job that was killed continues from ``DIR/model.npz``
and keeps the points already in ``DIR/curve.csv``. A checkpoint is only trusted when it was made
by the very same command line and the run did not finish: the command (``--resume`` and
``--threads`` aside) is recorded in ``DIR/command.json`` with ``finished`` set once the trainer
has written ``run.json``. When the command differs (the configuration changed) or the previous run
finished (Snakemake reruns it on purpose, e.g. ``--forcerun``), the old checkpoint and curve are
removed and the run starts afresh.

The exit status is the trainer's. A trainer that exits 0 without writing ``run.json`` is an error.

The job dies with the workflow, even when Snakemake is killed with SIGKILL. The pipeline puts
Snakemake's process id in ``SLIDE_WORKFLOW_PID`` when it parses the workflow; the launcher watches
that process (when it is one of its ancestors) and stops the trainer as soon as it is gone. On
Linux the kernel also sends SIGTERM (``prctl(PR_SET_PDEATHSIG)``) to the launcher when its parent
(the job's shell) dies and to the trainer when the launcher dies; elsewhere the launcher polls its
parent. On SIGTERM, SIGINT or SIGHUP the launcher stops the trainer (SIGTERM, then SIGKILL after
``STOP_GRACE_SECONDS``) and exits with 128 + the signal.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..settings import child_env

STATE_FILES = ("model.npz", "curve.csv", "run.json")
IGNORED_FLAGS = {"--resume": 0, "--threads": 1, "--keep-going": 0}
#: Seconds the trainer has to exit after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 5.0
#: The workflow's process id (set by the pipeline when it parses the Snakefile).
WORKFLOW_PID_ENV = "SLIDE_WORKFLOW_PID"
_PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only).

    Returns False where that is not available (other systems, no libc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _child_setup() -> None:  # runs in the trainer between fork and exec
    set_parent_death_signal(signal.SIGTERM)


def stop(proc: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> int:
    """Terminate ``proc`` (SIGTERM, then SIGKILL after ``grace`` seconds); return its status."""
    if proc.poll() is None:
        try:
            proc.terminate()
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
        except ProcessLookupError:
            pass
    return proc.wait()


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of ``pid`` from /proc, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    try:
        return int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def workflow_process(env=None) -> tuple[int, int | None] | None:
    """(pid, start time) of the workflow named by ``SLIDE_WORKFLOW_PID`` when it is an ancestor."""
    raw = (env if env is not None else os.environ).get(WORKFLOW_PID_ENV, "")
    try:
        want = int(raw)
    except ValueError:
        return None
    if want <= 1:
        return None
    pid, seen = os.getppid(), set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        if pid == want:
            stat = _proc_stat(pid)
            return pid, (stat[1] if stat else None)
        stat = _proc_stat(pid)
        if stat is None:
            return None if sys.platform.startswith("linux") else (want, None)
        pid = stat[0]
    return None


def _alive(process: tuple[int, int | None]) -> bool:
    pid, start = process
    if start is not None:
        stat = _proc_stat(pid)
        return stat is not None and stat[1] == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Stopped(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def run_child(cmd: list[str], poll: float = 0.5) -> int:
    """Run ``cmd`` and return its exit status.

    It does not outlive this process, its parent or the workflow (:func:`workflow_process`).
    """
    parent = os.getppid()
    watch_parent = not set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the request took effect
        return 128 + signal.SIGTERM
    workflow = workflow_process()

    def on_signal(signum, _frame):
        raise _Stopped(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    proc = None
    try:
        proc = subprocess.Popen(cmd, env=child_env(),
                                preexec_fn=_child_setup if sys.platform.startswith("linux") else None)
        print(f"launch: trainer pid {proc.pid}", file=sys.stderr, flush=True)
        while True:
            try:
                return proc.wait(timeout=poll)
            except subprocess.TimeoutExpired:
                if (watch_parent and os.getppid() != parent) or (workflow and not _alive(workflow)):
                    print("launch: the workflow is gone; stopping the trainer", file=sys.stderr, flush=True)
                    stop(proc)
                    return 128 + signal.SIGTERM
    except _Stopped as err:
        print(f"launch: {signal.Signals(err.signum).name}: stopping the trainer", file=sys.stderr, flush=True)
        if proc is not None:
            stop(proc)
        return 128 + err.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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
    parser.add_argument("--out", type=Path,
                        help="the run directory (the trainer's --out); without it the command is only "
                             "supervised (it dies with the workflow), as for a benchmark job")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the trainer's command line")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given after --")
    if args.out is None:
        return run_child(cmd)
    action = prepare_dir(args.out, cmd)
    print(f"launch: {args.out}: {action}", file=sys.stderr, flush=True)
    print("launch: " + " ".join(cmd), file=sys.stderr, flush=True)
    code = run_child(cmd)
    if code == 0 and not (args.out / "run.json").exists():
        print(f"launch: the trainer exited 0 but wrote no {args.out}/run.json", file=sys.stderr)
        return 1
    if code == 0:
        mark_finished(args.out)
    return code


if __name__ == "__main__":
    sys.exit(main())
