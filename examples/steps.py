"""Step timing for the demos: wall time and CPU time of each step, printed as one table at the end.

CPU time is this process's (all its threads: the in-process service, training, scoring) plus the children it
waited for (CLI subprocesses, pip); a server that runs as its own process (Label Studio) is measured separately
from /proc when its pid is known. On a shared machine wall time grows with the load, CPU time much less: both are
printed, with the load average, so a reader can tell.
"""

import json
import os
import resource
import time
from contextlib import contextmanager
from pathlib import Path


def cpu_seconds() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def proc_cpu_seconds(pid: int | None) -> float | None:
    """user + system CPU seconds of another process (Linux /proc), None when unreadable."""
    if not pid:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def install_timing(path: Path | None) -> dict | None:
    """The install step measured by `examples/timed.py` (the Makefile's demo targets), if it ran just now."""
    if path is None or not path.exists() or time.time() - path.stat().st_mtime > 3600:
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Steps:
    """`with steps("ingest"): ...` records wall and CPU seconds of each step, in order."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.t0 = time.perf_counter()
        self.cpu0 = cpu_seconds()
        self.load0 = os.getloadavg()

    def add(self, name: str, wall: float, cpu: float | None, note: str = "") -> None:
        self.rows.append({"step": name, "wall_s": round(wall, 1), "cpu_s": None if cpu is None else round(cpu, 1),
                          "note": note})

    @contextmanager
    def __call__(self, name: str, note: str = ""):
        t, c = time.perf_counter(), cpu_seconds()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t, cpu_seconds() - c, note)

    def table(self, console, install: dict | None = None, extra_cpu: dict[str, float | None] | None = None) -> None:
        from rich.table import Table

        t = Table(title="time per step (wall = elapsed; CPU = user+system of this process and its children)")
        for c in ("step", "wall s", "CPU s", "note"):
            t.add_column(c, justify="right" if c.endswith(" s") else "left")
        rows = list(self.rows)
        if install is not None:
            rows.insert(0, {"step": "install (make -j2 install labelstudio)", "wall_s": install.get("wall_s"),
                            "cpu_s": install.get("cpu_s"), "note": install.get("note", "")})
        for r in rows:
            t.add_row(r["step"], f"{r['wall_s']:.1f}" if r["wall_s"] is not None else "—",
                      f"{r['cpu_s']:.1f}" if r["cpu_s"] is not None else "—", r["note"])
        wall, cpu = time.perf_counter() - self.t0, cpu_seconds() - self.cpu0
        t.add_row("[bold]the demo (after installation)", f"[bold]{wall:.1f}", f"[bold]{cpu:.1f}", "")
        if install is not None and install.get("wall_s") is not None:
            t.add_row("[bold]install + demo", f"[bold]{wall + install['wall_s']:.1f}",
                      f"[bold]{cpu + (install.get('cpu_s') or 0):.1f}", "")
        for name, sec in (extra_cpu or {}).items():
            t.add_row(name, "", "—" if sec is None else f"{sec:.1f}", "separate process, not in the CPU total")
        console.print(t)
        load1 = os.getloadavg()
        console.print(f"load average (1, 5, 15 min) at start {self.load0[0]:.1f} {self.load0[1]:.1f} "
                      f"{self.load0[2]:.1f}, at the end {load1[0]:.1f} {load1[1]:.1f} {load1[2]:.1f} on "
                      f"{os.cpu_count()} cores: above the core count, wall times are pessimistic; CPU times much "
                      "less so.")
