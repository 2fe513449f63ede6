"""Was the machine quiet while a method was timed? One measurement and one rule for every run.

Every timed region (a training run, ``bench``, ``compare``, a thread-scaling job) is wrapped in a
:class:`ContentionMeter`. It reads, at the start and at the end:

* the load averages (``os.getloadavg``), recorded as they are;
* this process's CPU time (user + system, all threads), from which ``cpu_utilisation`` =
  CPU seconds / (timed seconds x threads) follows;
* the machine's busy CPU time (``psutil.cpu_times``: everything but idle and iowait, steal
  included). The busy time that is not this process's, divided by (wall seconds x cores), is
  ``other_cpu_share``: the part of the machine's capacity other processes (or the hypervisor)
  took while we were timing.

A load average lags by a minute and counts our own threads (and, in a pipeline, the job that ran
just before), so it is recorded for the reader but not judged: the verdict rests on
``other_cpu_share`` alone, which is measured over exactly the timed span and excludes us.
:func:`disturbed_reason` turns the figures into the one judgement the report, ``bench`` and
``compare`` share: ``None`` (quiet) or a short reason.
"""

from __future__ import annotations

import os
import time

#: Other processes may take at most this share of the machine's CPU capacity during a timed
#: span before its timings are called unreliable. A quiet 2-core machine shows 0.00-0.03 here; one
#: busy core beside us shows about 0.5.
MAX_OTHER_CPU_SHARE = 0.10
DISTURBED_NOTE = "disturbed: timings unreliable, rerun on a quiet machine"


def _busy_seconds() -> float:
    import psutil

    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0)
                 - getattr(t, "guest_nice", 0.0))


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - platforms without load averages
        return None


def machine_cores() -> int:
    return os.cpu_count() or 1


class ContentionMeter:
    """Measure contention over a span: ``start()``, timed work, ``stop()``, then :meth:`figures`.

    ``cpu_seconds`` may be accumulated over the timed parts only (:meth:`timed`), while the
    machine's share is taken over the whole span from ``start`` to ``stop``.
    """

    def __init__(self, threads: int):
        self.threads = max(1, int(threads))
        self.cpu_seconds = 0.0
        self.timed_seconds = 0.0
        self._t0 = self._busy0 = self._own0 = None
        self.load_start = self.load_end = None
        self._wall = self._other = 0.0

    def start(self) -> "ContentionMeter":
        """Start (or, after :meth:`stop`, continue) the span; the first start's load is kept."""
        if self.load_start is None:
            self.load_start = _load()
        self._t0 = time.perf_counter()
        self._busy0 = _busy_seconds()
        self._own0 = time.process_time()
        return self

    def add(self, seconds: float, cpu_seconds: float) -> None:
        """Count one timed piece of work: its wall seconds and this process's CPU seconds in it."""
        self.timed_seconds += seconds
        self.cpu_seconds += cpu_seconds

    def stop(self) -> "ContentionMeter":
        if self._t0 is None:
            raise RuntimeError("ContentionMeter.stop() before start()")
        wall = time.perf_counter() - self._t0
        own = time.process_time() - self._own0
        busy = _busy_seconds() - self._busy0
        self._wall += wall
        self._other += max(0.0, busy - own)
        self.load_end = _load()
        self._t0 = None
        return self

    def resume(self, figures: dict | None) -> None:
        """Continue the totals of an earlier, interrupted span (a resumed training run)."""
        if not figures:
            return
        self.cpu_seconds += float(figures.get("cpu_seconds") or 0.0)
        self.timed_seconds += float(figures.get("_timed_seconds") or 0.0)
        self._wall += float(figures.get("_span_seconds") or 0.0)
        self._other += float(figures.get("_other_cpu_seconds") or 0.0)

    def figures(self) -> dict:
        """What every run and benchmark records (``run.json`` keys)."""
        util = (self.cpu_seconds / (self.timed_seconds * self.threads)) if self.timed_seconds > 0 else None
        share = (self._other / (self._wall * machine_cores())) if self._wall > 0 else None
        out = {
            "load_average_start": self.load_start,
            "load_average_end": self.load_end,
            "cpu_seconds": round(self.cpu_seconds, 3),
            "cpu_utilisation": None if util is None else round(util, 3),
            "other_cpu_share": None if share is None else round(share, 3),
        }
        out["disturbed"] = disturbed_reason(out)
        return out

    def state(self) -> dict:
        """Totals to carry across a resume (see :meth:`resume`)."""
        return {"cpu_seconds": self.cpu_seconds, "_timed_seconds": self.timed_seconds,
                "_span_seconds": self._wall, "_other_cpu_seconds": self._other}


def disturbed_reason(record: dict, cores: int | None = None) -> str | None:
    """``None`` when a run's or benchmark's figures say the machine was quiet, else why not.

    ``record`` is a ``run.json`` record or a ``bench`` result. Records written before these figures
    existed have none of them and are judged quiet (nothing says otherwise).
    """
    cores = cores or (record.get("machine") or {}).get("cores") or machine_cores()
    reasons = []
    share = record.get("other_cpu_share")
    if share is not None and share > MAX_OTHER_CPU_SHARE:
        reasons.append(f"other processes used {share:.0%} of the {cores} cores")
    return "; ".join(reasons) or None
