"""Guards for LF files that come from elsewhere (uploads to the API): bounded YAML, and regexes that run in Python
under a time budget in a separate, killable process.

- `safe_yaml(text)`: YAML/JSON with PyYAML's SafeLoader, refusing aliases (a 404-byte alias bomb expands to
  gigabytes), nesting deeper than `MAX_DEPTH` and documents over `max_bytes`.
- `search_in_worker(pattern, flags, texts, timeout_s)`: `re.search` over the texts in a fresh `python -I -S` process
  (no site, no environment, no current folder on the path) with a memory and CPU rlimit; past `timeout_s` it is
  killed and `RegexTimeout` is raised. Python's `re` holds the GIL for one whole search, so a backtracking pattern
  run in the server's process froze every thread and ignored SIGTERM; in a worker the server only waits on a pipe.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence

import numpy as np

from labeling.lfs.kinds import LFDefinitionError

MAX_DEPTH = 64

_WORKER = r"""
import json, re, resource, sys
cap = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
cpu = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
d = json.loads(sys.stdin.buffer.read())
search = re.compile(d["pattern"], d["flags"]).search
out = bytearray()
for t in d["texts"]:
    out.append(50 if t is None else 49 if search(t) is not None else 48)
sys.stdout.buffer.write(bytes(out))
"""


class RegexTimeout(Exception):
    """A regex ran past its time budget (or memory) in the worker, which was killed."""


def safe_yaml(text: str | bytes, *, max_bytes: int, where: str = "LF file") -> object:
    """Parse YAML/JSON safely: no tags beyond SafeLoader's, no aliases, bounded size and nesting."""
    import yaml

    size = len(text.encode("utf-8") if isinstance(text, str) else text)
    if size > max_bytes:
        raise LFDefinitionError(f"{where}: {size:,} bytes, over the limit of {max_bytes:,} (CURATE_LF_FILE_MAX_BYTES)")

    class _Loader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise LFDefinitionError(f"{where}: YAML alias *{event.anchor} at line {event.start_mark.line + 1}: "
                                        "aliases are not accepted in LF files (write the value out)")
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise LFDefinitionError(f"{where}: nested deeper than {MAX_DEPTH} levels")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    try:
        return yaml.load(text, Loader=_Loader)
    except LFDefinitionError:
        raise
    except yaml.YAMLError as e:
        raise LFDefinitionError(f"{where}: not YAML/JSON: {e}") from None
    except (RecursionError, ValueError, OverflowError) as e:
        raise LFDefinitionError(f"{where}: cannot be read safely: {type(e).__name__}: {str(e)[:200]}") from None


def search_in_worker(pattern: str, flags: int, texts: Sequence[str | None], timeout_s: float) -> np.ndarray:
    """Per text: 1 when `re.search(pattern, text, flags)` matches, 0 when not, -1 for None. Raises RegexTimeout."""
    payload = json.dumps({"pattern": pattern, "flags": int(flags), "texts": list(texts)}).encode()
    cap = (1 << 30) + 8 * len(payload)
    cpu = int(timeout_s) + 2
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _WORKER, str(cap), str(cpu)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(payload, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RegexTimeout(f"ran past {timeout_s:g} s on {len(texts):,} records and was stopped") from None
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0 or len(out) != len(texts):
        last = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise RegexTimeout(f"the regex worker failed ({last[0][:200]}); out of memory or CPU time?")
    codes = np.frombuffer(out, dtype=np.uint8).astype(np.int8) - 48
    codes[codes == 2] = -1
    return codes
