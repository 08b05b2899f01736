"""A bounded schemathesis run against the real app with keys configured: every operation of the OpenAPI schema,
generated (valid and invalid) requests with the admin key; no response may be a server error (5xx other than the
documented 503 of a full webhook queue) and none may take longer than the bound.

Training and scoring are swapped for quick fakes (a POST /runs queues a job; the fuzzing is about the HTTP layer,
not about training a model); ingest, SQL, weak supervision, splits, augmentation and selection are the real ones.
"""

import json
import time

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, settings
from pydantic import SecretStr

from tests.conftest import DATA

KEY = "fuzz-admin-key"
MAX_EXAMPLES = 30            # per operation, half valid, half invalid (~45 operations): about a minute here
SLOW_S = 10.0                # a request slower than this fails the run (the finding: an augment over 60 s)


def _fake_train(store, dataset, config=None, progress=None):
    from curation.store import now

    run_id = f"run-fuzz-{time.monotonic_ns()}"
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.runs (run_id, dataset, status, started_at, finished_at) "
                    "VALUES (?, ?, 'succeeded', ?, ?)", [run_id, dataset, now(), now()])
    return {"run_id": run_id, "dataset": dataset, "status": "succeeded"}


def _fake_score(store, run_id, dataset=None, include_labeled=False, progress=None):
    return {"run_id": run_id, "scored": 0}


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    from fastapi.testclient import TestClient

    import api.rounds
    from api.app import create_app
    from curation.settings import Settings
    from curation.store import Store

    mp = pytest.MonkeyPatch()
    mp.setattr(api.rounds, "train", _fake_train)
    mp.setattr(api.rounds, "score", _fake_score)
    tmp = tmp_path_factory.mktemp("fuzz")
    settings = Settings(db=tmp / "fuzz.duckdb", api_key=SecretStr(KEY), sql_timeout_s=5.0)
    store = Store.open(settings)
    app = create_app(settings, store)
    rows = [json.loads(line) for line in (DATA / "wrench" / "youtube.jsonl").open()][:200]
    src = tmp / "yt.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with TestClient(app, headers={"X-API-Key": KEY}) as c:
        with src.open("rb") as f:
            r = c.post("/datasets/yt/ingest", files={"file": ("yt.jsonl", f)},
                       data={"label_field": "label", "id_field": "id", "labels": "ham,spam"})
        assert r.status_code == 201, r.text
        assert c.post("/datasets/yt/splits", json={"from_column": "split"}).status_code == 200
        # the augmenters' library is imported once per process (seconds); a server does it at start
        r = c.post("/datasets/yt/augment", json={"augmenters": ["keyboard", "word_swap"], "limit": 1})
        assert r.status_code == 200, r.text
        yield app
    store.close()
    mp.undo()


def _operations(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    for result in schema.get_all_operations():
        yield result.ok()


def _check(case, failures: list) -> None:
    from schemathesis.checks import not_a_server_error

    if "name" in (case.path_parameters or {}) and hash(repr(case.body)) % 2 == 0:
        case.path_parameters["name"] = "yt"   # half the dataset routes reach the real stages on real data
    started = time.monotonic()
    try:
        response = case.call(headers={"X-API-Key": KEY})
    except Exception as e:  # noqa: BLE001 - the in-process transport re-raises a server error: record it
        failures.append(f"{case.method} {case.formatted_path}: server error {type(e).__name__}: {str(e)[:200]}")
        return
    took = time.monotonic() - started
    label = f"{case.method} {case.formatted_path} -> {response.status_code} ({took:.1f} s)"
    if response.status_code == 503 and case.path.startswith(("/webhooks", "/ml")):
        return   # documented: the event queue is full
    try:
        case.validate_response(response, checks=[not_a_server_error])
    except AssertionError as e:   # schemathesis raises a FailureGroup (an AssertionError)
        failures.append(f"{label}: {str(e)[:300]}")
    if took >= SLOW_S:
        failures.append(f"{label}: slower than {SLOW_S:g} s")


@pytest.mark.slow
def test_no_server_errors(fuzz_app):
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    failures: list[str] = []
    calls = 0
    for op in _operations(fuzz_app):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=MAX_EXAMPLES // 2, deadline=None, phases=[Phase.generate], database=None,
                      suppress_health_check=list(HealthCheck), derandomize=True)
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case):
                nonlocal calls
                calls += 1
                _check(case, failures)

            try:
                run()
            except Unsatisfiable:   # nothing to make invalid (e.g. GET /health has no parameters)
                pass
    assert calls >= 200
    assert not failures, f"{len(failures)} of {calls} requests failed:\n" + "\n".join(failures[:40])
