"""Typed settings. Read once, explicitly (`Settings()`), never at import."""

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CURATE_", extra="ignore")

    db: Path = Field(Path("curate.duckdb"), description="the DuckDB file (CURATE_DB)")
    data_dir: Path | None = Field(None, description="snapshots and runs; default: beside the DB file")
    sql_row_limit: int = Field(10_000, ge=1, description="rows a sandboxed query may return")
    sql_timeout_s: float = Field(30.0, gt=0, description="seconds a sandboxed query may run")
    sql_max_rows: int = Field(100_000, ge=1, description="most rows a caller may ask a sandboxed query for")
    sql_max_timeout_s: float = Field(300.0, gt=0, description="most seconds a caller may give a sandboxed query")
    sql_max_result_bytes: int = Field(64 * 2**20, ge=1024, description="a sandboxed query stops (SqlLimit) when "
                                      "its fetched result grows past this many bytes")
    db_memory_limit: str = Field("50%", description="DuckDB memory_limit of the store, e.g. 4GB or 50% of RAM "
                                 "(set at open; the configuration is locked afterwards)")
    db_max_temp_size: str = Field("8GB", description="DuckDB max_temp_directory_size of the store: how much a "
                                  "query may spill to disk")
    lf_file_max_bytes: int = Field(1_000_000, ge=1, description="largest declarative LF file (YAML/JSON) loaded")
    lf_regex_timeout_s: float = Field(30.0, gt=0, description="seconds a declarative LF's Python-engine regex may "
                                      "run per batch of records (in a separate, killable process)")
    max_text_length: int | None = Field(None, description="overrides the contract's maxLength for `text`")
    api_key: SecretStr | None = Field(None, description="key for mutating API endpoints (CURATE_API_KEY)")
    webhook_secret: SecretStr | None = Field(None, description="token Label Studio webhooks must present")
    server_url: str | None = Field(None, description="a running `curate serve` the CLI may talk to")
    ls_url: str | None = Field(None, description="Label Studio base URL (CURATE_LS_URL)")
    ls_token: SecretStr | None = Field(None, description="Label Studio API token (CURATE_LS_TOKEN)")
    allowed_hosts: list[str] = Field(default_factory=list, description="Host names (or name:port) the server "
                                     "answers; empty: the bound host, localhost, 127.0.0.1, ::1 (CURATE_ALLOWED_HOSTS, "
                                     "a JSON list; `*` turns the check off)")
    max_json_bytes: int = Field(1_000_000, ge=1024, description="largest JSON body (webhooks included); 413 above")
    max_upload_bytes: int = Field(200_000_000, ge=1024, description="largest upload (ingest, LF files, votes)")
    max_json_depth: int = Field(64, ge=2, description="deepest JSON nesting accepted; 400 deeper")
    webhook_queue_max: int = Field(10_000, ge=1, description="webhook events waiting to be stored; 503 beyond "
                                   "(the round's pull reconciles what Label Studio could not deliver)")
    sql_max_concurrent: int = Field(4, ge=1, description="SQL queries run at once by the server; 429 beyond")
    max_active_jobs: int = Field(8, ge=1, description="queued or running jobs per kind; 429 beyond")
    engine: Literal["local", "ray", "auto"] = Field("auto", description="where heavy stages run (LF application, "
                                                    "near-duplicates, scoring, tune): auto = ray when ray_address "
                                                    "is set, else local (CURATE_ENGINE)")
    ray_address: str | None = Field(None, description="a Ray cluster to join, host:port of its head "
                                    "(CURATE_RAY_ADDRESS); unset with engine=ray: a local Ray on 127.0.0.1")
    auto_migrate: bool = Field(True, description="migrate an older store on open, after a backup copy; "
                               "false: refuse and name `curate migrate` (CURATE_AUTO_MIGRATE)")

    @property
    def home(self) -> Path:
        return self.data_dir or self.db.resolve().parent

    @property
    def snapshots_dir(self) -> Path:
        return self.home / "snapshots"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"
