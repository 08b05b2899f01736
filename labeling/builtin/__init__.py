"""Built-in LF sets, by name: `curate lf apply --lfs builtin:NAME` (`labeling.lfs.load_lfs("builtin:NAME")`).

A small registry (name → factory returning the LFs) that names the bad key and the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable

from labeling.lfs.kinds import LF, LFDefinitionError, check_names


def _instruction_quality() -> list[LF]:
    from labeling.builtin.instruction_quality import instruction_quality_lfs

    return instruction_quality_lfs()


BUILTIN_SETS: dict[str, Callable[[], list[LF]]] = {
    "instruction-quality": _instruction_quality,
}


def builtin_lfs(name: str) -> list[LF]:
    """The LFs of the built-in set `name`; LFDefinitionError naming the valid sets for an unknown one."""
    if name not in BUILTIN_SETS:
        raise LFDefinitionError(f"built-in LF set {name!r} unknown; valid: "
                                f"{', '.join('builtin:' + k for k in sorted(BUILTIN_SETS))}")
    lfs = BUILTIN_SETS[name]()
    check_names(lfs)
    return lfs


__all__ = ["BUILTIN_SETS", "builtin_lfs"]
