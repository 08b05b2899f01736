"""The stage functions the service calls, resolved lazily by name.

Routes and jobs never import the stages at module level: the app starts (and serves health, SQL, records, jobs)
even where a heavy stage (torch, snorkel) cannot be imported, and that stage's endpoints answer 503 with the
import error. Tests swap single functions with `Services(train=fake_train)` or a FastAPI dependency override of
`api.app.get_services`.
"""

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from curation.errors import CurateError

# service name -> "module:function"
TARGETS = {
    "ingest": "curation.ingest:ingest",
    "run_sql": "curation.sql:run_sql",
    "snapshot": "curation.versions:snapshot",
    "apply_lfs": "labeling.weak:apply_lfs",
    "import_votes": "labeling.weak:import_votes",
    "fit_label_model": "labeling.weak:fit_label_model",
    "lf_report": "labeling.weak:lf_report",
    "make_split": "curation.splits:make_split",
    "check_split": "curation.splits:check_split",
    "augment": "curation.augment:augment",
    "train": "training.train:train",
    "score": "training.score:score",
    "load_model": "training.score:load_model",
    "select": "labeling.active:select",
    "push_selection": "labeling.studio:push_selection",
    "pull_annotations": "labeling.studio:pull_annotations",
    "handle_webhook": "labeling.studio:handle_webhook",
    "studio_client": "labeling.studio:StudioClient",
}


class ServiceUnavailable(CurateError):
    """A stage's module cannot be imported here (missing or broken dependency)."""

    exit_code = 5


def _resolve(target: str) -> Callable:
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ServiceUnavailable(f"{module}.{name} is not available in this installation ({type(e).__name__}: "
                                 f"{e}); install the missing package or check the server log") from None


def _lazy(name: str) -> Callable:
    def call(*args: Any, **kwargs: Any) -> Any:
        return _resolve(TARGETS[name])(*args, **kwargs)

    call.__name__ = name
    call.lazy_target = TARGETS[name]   # type: ignore[attr-defined]
    return call


@dataclass
class Services:
    ingest: Callable = field(default_factory=lambda: _lazy("ingest"))
    run_sql: Callable = field(default_factory=lambda: _lazy("run_sql"))
    snapshot: Callable = field(default_factory=lambda: _lazy("snapshot"))
    apply_lfs: Callable = field(default_factory=lambda: _lazy("apply_lfs"))
    import_votes: Callable = field(default_factory=lambda: _lazy("import_votes"))
    fit_label_model: Callable = field(default_factory=lambda: _lazy("fit_label_model"))
    lf_report: Callable = field(default_factory=lambda: _lazy("lf_report"))
    make_split: Callable = field(default_factory=lambda: _lazy("make_split"))
    check_split: Callable = field(default_factory=lambda: _lazy("check_split"))
    augment: Callable = field(default_factory=lambda: _lazy("augment"))
    train: Callable = field(default_factory=lambda: _lazy("train"))
    score: Callable = field(default_factory=lambda: _lazy("score"))
    load_model: Callable = field(default_factory=lambda: _lazy("load_model"))
    select: Callable = field(default_factory=lambda: _lazy("select"))
    push_selection: Callable = field(default_factory=lambda: _lazy("push_selection"))
    pull_annotations: Callable = field(default_factory=lambda: _lazy("pull_annotations"))
    handle_webhook: Callable = field(default_factory=lambda: _lazy("handle_webhook"))
    studio_client: Callable = field(default_factory=lambda: _lazy("studio_client"))
    # a factory of the Label Studio client for pushes and pulls (None: no Label Studio configured)
    studio: Callable[[], Any] | None = None

    def available(self) -> dict[str, bool]:
        """Which stages are installed (for /health; found, not imported, so the check stays cheap)."""
        import importlib.util
        import sys

        out = {}
        for f in fields(self):
            fn = getattr(self, f.name)
            if fn is None or f.name == "studio":
                continue
            target = getattr(fn, "lazy_target", None)
            if target is None:
                out[f.name] = True
                continue
            module, _, name = target.partition(":")
            if module in sys.modules:
                out[f.name] = hasattr(sys.modules[module], name)
                continue
            try:
                out[f.name] = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                out[f.name] = False
        return out


def call_with_supported(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call `fn`, dropping keyword arguments its signature does not take (e.g. an optional `progress=`)."""
    target = fn
    lazy = getattr(fn, "lazy_target", None)
    if lazy is not None:
        target = _resolve(lazy)
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return target(*args, **kwargs)
    params = sig.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return target(*args, **kwargs)
    names = {p.name for p in params}
    return target(*args, **{k: v for k, v in kwargs.items() if k in names})
