"""Run a command and write its wall and CPU seconds (the command and every process it waited for) as JSON.

    python3 examples/timed.py OUT.json -- make -j2 install labelstudio

Standard library only: the Makefile runs it with the system Python before the venvs exist. The demos read
OUT.json to put the installation into their step table.
"""

import json
import os
import resource
import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    out, cmd = argv[0], argv[2:]
    t0, load = time.perf_counter(), os.getloadavg()[0]
    rc = subprocess.call(cmd)
    wall = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as fh:
        json.dump({"command": " ".join(cmd), "rc": rc, "wall_s": round(wall, 1),
                   "cpu_s": round(kids.ru_utime + kids.ru_stime, 1),
                   "note": "nothing to do: already installed" if wall < 5 else f"load avg {load:.1f} at start"}, fh)
    return rc


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
