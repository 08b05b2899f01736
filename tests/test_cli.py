import json
import subprocess
import sys

from typer.testing import CliRunner

from cli import app
from tests.conftest import DATA

runner = CliRunner()
PSY = str(DATA / "raw" / "Youtube01-Psy.csv")


def cli(*args, db):
    return runner.invoke(app, [*args, "--db", str(db)])


def ingest_psy(db):
    return cli("ingest", PSY, "-d", "yt", "--text-field", "CONTENT", "--label-field", "CLASS", "--id-field",
               "COMMENT_ID", "--group-field", "AUTHOR", "--labels", "ham,spam", "--json", db=db)


def test_ingest_json_has_the_counts(tmp_path):
    r = ingest_psy(tmp_path / "c.duckdb")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert {k: out[k] for k in ("dataset", "rows_read", "accepted", "quarantined", "duplicates")} == {
        "dataset": "yt", "rows_read": 350, "accepted": 350, "quarantined": 0, "duplicates": 2}


def test_every_command_prints_one_json_object(tmp_path):
    db = tmp_path / "c.duckdb"
    ingest_psy(db)
    for args in (["datasets"], ["quarantine"], ["sql", "SELECT count(*) AS n FROM records"],
                 ["snapshot", "-d", "yt"], ["export", "-d", "yt", "--out", str(tmp_path / "e.parquet")]):
        r = cli(*args, "--json", db=db)
        assert r.exit_code == 0, (args, r.output)
        assert isinstance(json.loads(r.stdout), dict)


def test_sql_formats_and_refusal(tmp_path):
    db = tmp_path / "c.duckdb"
    ingest_psy(db)
    r = cli("sql", "SELECT label, count(*) AS n FROM records GROUP BY 1 ORDER BY 1", "--format", "json", db=db)
    assert json.loads(r.stdout)["rows"] == [{"label": "ham", "n": 175}, {"label": "spam", "n": 175}]
    r = cli("sql", "SELECT label FROM records ORDER BY 1 LIMIT 2", "--format", "csv", db=db)
    assert r.stdout.splitlines() == ["label", "ham", "ham"]
    r = cli("sql", "SELECT text FROM records", "--out", str(tmp_path / "q.parquet"), db=db)
    assert r.exit_code == 0 and (tmp_path / "q.parquet").exists()
    r = cli("sql", "DELETE FROM store.records", db=db)
    assert r.exit_code == 2 and "read-only" in r.stderr and "Traceback" not in r.output


def test_unreadable_file_exits_2_with_a_message(tmp_path):
    r = cli("ingest", str(tmp_path / "missing.csv"), "-d", "x", db=tmp_path / "c.duckdb")
    assert r.exit_code == 2 and "missing.csv" in r.stderr and "Traceback" not in r.output


def test_locked_store_is_reported_plainly(tmp_path):
    db = tmp_path / "c.duckdb"
    ingest_psy(db)
    code = ("import sys, time; from curation.store import Store; "
            f"s = Store.open(db={str(db)!r}); print('ready', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        r = subprocess.run([sys.executable, "-m", "cli", "datasets", "--db", str(db)],
                           capture_output=True, text=True, check=False)
        assert r.returncode == 3
        assert "held for writing" in r.stderr and str(db) in r.stderr and "Traceback" not in r.stderr
    finally:
        holder.kill()


def test_sql_and_datasets_through_a_running_server(tmp_path):
    from api.app import create_app
    from api.server import ServerThread
    from curation.settings import Settings

    db = tmp_path / "c.duckdb"
    ingest_psy(db)
    with ServerThread(create_app(Settings(db=db))) as server:
        r = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM records", "--json", "--server", server.url])
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["rows"] == [{"n": 350}]
        r = runner.invoke(app, ["datasets", "--json", "--server", server.url])
        assert [d["name"] for d in json.loads(r.stdout)["datasets"]] == ["yt"]
        r = runner.invoke(app, ["sql", "DROP TABLE store.records", "--server", server.url])
        assert r.exit_code == 2 and "read-only" in r.stderr


def test_train_options_reach_the_config_and_defaults_come_from_it(tmp_path, monkeypatch):
    import training.train
    from training.config import TrainConfig

    seen = {}

    def fake_train(store, dataset, config, progress=None, allow_contamination=False):
        seen["config"] = config
        return {"run_id": "r", "status": "succeeded", "metrics": {}}

    monkeypatch.setattr(training.train, "train", fake_train)
    db = tmp_path / "t.duckdb"
    assert ingest_psy(db).exit_code == 0
    r = cli("train", "-d", "yt", "--json", "--weak-targets", "soft", "--no-weak-confidence-weighting",
            "--epochs", "3", db=db)
    assert r.exit_code == 0, r.output
    assert seen["config"] == TrainConfig(weak_targets="soft", weak_confidence_weighting=False, epochs=3)
    r = cli("train", "-d", "yt", "--json", db=db)
    assert r.exit_code == 0, r.output
    assert seen["config"] == TrainConfig()
