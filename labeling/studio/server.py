"""A local Label Studio server in its own virtual environment, for tests, the demo and development.

Label Studio (`label-studio==1.23.2`) pins Django, pyarrow<25, pytz 2022 and openai<2, so it lives in
`<root>/venv`, never in the product's environment. Everything it writes stays under `<root>` (default
`.labelstudio/`, git-ignored):

    <root>/venv/                  the server's virtual environment (`install`)
    <root>/template/              a migrated data dir with our admin user and API token (made once, ~25 s)
    <root>/credentials.json       username, password, token of that user (mode 0600)
    <root>/instances/<name>/      data dirs started from a copy of the template (~2.5 s instead of ~25 s)
    <root>/xdg/                   XDG_CONFIG_HOME / XDG_DATA_HOME of the server
    <root>/logs/<name>.log        the server's output
    <root>/server.json            the background server `python -m labeling.studio.server start` left running

Facts this module works around (measured, see DESIGN.md §4): `label-studio --version` starts a server (the
version is read from package metadata instead); `--host` is only the public URL, the bind address is
`--internal-host`; a busy port makes it silently move to port+1 (so the server is verified by its token on the
port we chose); user and token are taken from the environment only when the database is first created; legacy
`Token` auth needs `LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN`; webhooks and ML backends on loopback need the SSRF
guards off; bare `USERNAME`, `PASSWORD`, `DEBUG`, `CI` variables are read as fallbacks and are removed.

Command line (used by the Makefile, CI and the demo):

    python -m labeling.studio.server install|start|stop|status [--root .labelstudio] [--port N] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import httpx

from curation.errors import CurateError

log = logging.getLogger(__name__)

LS_VERSION = "1.23.2"
DEFAULT_ROOT = Path(".labelstudio")
DEFAULT_USERNAME = "curate@localhost"
# Environment variables Label Studio reads as fallbacks for its own settings; never pass ours through.
_SCRUB = ("USERNAME", "PASSWORD", "DEBUG", "CI", "DJANGO_DB", "DATABASE_URL", "LABEL_STUDIO_HOST", "HOST",
          "LABEL_STUDIO_PORT", "PORT", "REDIS_LOCATION", "DJANGO_SETTINGS_MODULE")


class ServerError(CurateError):
    """The local Label Studio server could not be installed, started or reached."""


@dataclasses.dataclass
class Credentials:
    username: str
    password: str
    token: str
    secret_key: str = ""     # Django SECRET_KEY: stable, so browser sessions survive a restart

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        return f"Credentials(username={self.username!r}, password=***, token=***, secret_key=***)"


@dataclasses.dataclass
class Server:
    """A running Label Studio. `stop()` ends the process group this module started (and nothing else)."""

    url: str
    port: int
    pid: int
    data_dir: Path
    log_file: Path
    credentials: Credentials
    ephemeral: bool = False     # the data dir is removed on stop
    _proc: subprocess.Popen | None = dataclasses.field(default=None, repr=False)

    @property
    def token(self) -> str:
        return self.credentials.token

    @property
    def username(self) -> str:
        return self.credentials.username

    @property
    def password(self) -> str:
        return self.credentials.password

    def alive(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return _pid_alive(self.pid)

    def stop(self, timeout: float = 15.0) -> None:
        _terminate(self.pid, self._proc, timeout)
        if self.ephemeral:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.log_file.unlink(missing_ok=True)
        log.info("label studio on port %d stopped", self.port)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- install -----------------------------------------------------------------------------------------------
def venv_python(root: str | Path = DEFAULT_ROOT) -> Path:
    return Path(root) / "venv" / "bin" / "python"


def installed_version(root: str | Path = DEFAULT_ROOT) -> str | None:
    """The label-studio version in `<root>/venv`, read from its package metadata (never `label-studio
    --version`, which starts a server)."""
    for meta in sorted((Path(root) / "venv" / "lib").glob("python3*/site-packages/label_studio-*.dist-info/METADATA")):
        for line in meta.read_text(errors="replace").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
            if not line:
                break
    return None


def install(root: str | Path = DEFAULT_ROOT, *, version: str = LS_VERSION, python: str | None = None) -> dict:
    """Create `<root>/venv` and install `label-studio==<version>` into it. Idempotent: skips when that version
    is already there. Returns {"venv", "version", "installed": bool, "seconds"}."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with _lock(root):
        if installed_version(root) == version:
            return {"venv": str(root / "venv"), "version": version, "installed": False, "seconds": 0.0}
        venv = root / "venv"
        if not venv_python(root).exists():
            base = python or getattr(sys, "_base_executable", None) or sys.executable
            _run([base, "-m", "venv", str(venv)], "create the Label Studio venv")
        log.info("installing label-studio==%s into %s (about 1 GB, a minute or two)", version, venv)
        _run([str(venv_python(root)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              f"label-studio=={version}"], f"pip install label-studio=={version}")
        got = installed_version(root)
        if got != version:
            raise ServerError(f"{venv}: label-studio {got or 'missing'} after installing {version}; "
                              f"remove {venv} and run `python -m labeling.studio.server install` again")
    return {"venv": str(venv), "version": version, "installed": True, "seconds": round(time.monotonic() - t0, 1)}


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise ServerError(f"could not {what} (exit {proc.returncode}):\n" + "\n".join(tail))


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """Serialise install and template creation between processes (two test sessions at once)."""
    with open(root / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# -- start / stop ------------------------------------------------------------------------------------------
def credentials(root: str | Path = DEFAULT_ROOT) -> Credentials:
    path = Path(root) / "credentials.json"
    if not path.exists():
        raise ServerError(f"{path} is missing: run `python -m labeling.studio.server start` once to create the "
                          f"server's user and token")
    return Credentials(**json.loads(path.read_text()))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_env(root: Path, data_dir: Path, creds: Credentials) -> dict[str, str]:
    """The environment Label Studio runs with: files under `root`, our user and legacy token, loopback
    webhooks and ML backends allowed, no telemetry."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith(("LABEL_STUDIO_",
                                                                                          "CURATE_"))}
    env.update({
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "XDG_CONFIG_HOME": str(root / "xdg" / "config"),
        "XDG_DATA_HOME": str(root / "xdg" / "data"),
        "LABEL_STUDIO_USERNAME": creds.username,
        "LABEL_STUDIO_PASSWORD": creds.password,
        "LABEL_STUDIO_USER_TOKEN": creds.token,
        "SECRET_KEY": creds.secret_key or secrets.token_urlsafe(32),
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "SSRF_PROTECTION_ENABLED": "false",
        "ML_BLOCK_LOCAL_IP": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def start(root: str | Path = DEFAULT_ROOT, port: int | None = None, *, data_dir: str | Path | None = None,
          fresh: bool = True, timeout: float = 300.0, install_if_missing: bool = True) -> Server:
    """Start Label Studio on 127.0.0.1 and wait until it answers with our token.

    `data_dir=None, fresh=True` (tests): a new instance copied from the migrated template, removed on stop.
    `data_dir=None, fresh=False` (demo): `<root>/instances/default`, copied from the template once and kept.
    `port=None` picks a free port; a port that turns out busy is retried with another free one.
    """
    root = Path(root).resolve()
    if install_if_missing:
        install(root)
    elif installed_version(root) is None:
        raise ServerError(f"no Label Studio in {root / 'venv'}: run `python -m labeling.studio.server install`")
    template = ensure_template(root, timeout=timeout)
    creds = credentials(root)
    ephemeral = data_dir is None and fresh
    if data_dir is None:
        name = f"test-{os.getpid()}-{secrets.token_hex(3)}" if fresh else "default"
        data_dir = root / "instances" / name
    data_dir = Path(data_dir).resolve()
    if not (data_dir / "label_studio.sqlite3").exists():
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(template, data_dir)
    server = _launch_on_free_port(root, data_dir, port, creds, timeout)
    server.ephemeral = ephemeral
    return server


def _launch_on_free_port(root: Path, data_dir: Path, port: int | None, creds: Credentials, timeout: float,
                         name: str | None = None) -> Server:
    last: Exception | None = None
    for attempt in range(3):
        chosen = port if (port is not None and attempt == 0) else free_port()
        try:
            return _launch(root, data_dir, chosen, creds, timeout, name=name)
        except _PortTaken as e:
            last = e
            if port is not None:
                raise ServerError(f"port {port} is in use; pick another or leave --port out") from None
    raise ServerError(f"could not start Label Studio on a free port after 3 tries: {last}")


class _PortTaken(Exception):
    pass


def ensure_template(root: Path, timeout: float = 300.0) -> Path:
    """Create the migrated template data dir (admin user + token) once; later starts copy it."""
    template = root / "template"
    with _lock(root):
        if (template / ".ready").exists() and (root / "credentials.json").exists():
            return template
        shutil.rmtree(template, ignore_errors=True)
        template.mkdir(parents=True)
        cred_file = root / "credentials.json"
        if cred_file.exists():      # keep them: instances copied from an earlier template still use them
            creds = credentials(root)
        else:
            creds = Credentials(username=DEFAULT_USERNAME, password=secrets.token_urlsafe(16),
                                token=secrets.token_hex(20), secret_key=secrets.token_urlsafe(40))
            cred_file.touch(mode=0o600)
            cred_file.write_text(json.dumps(dataclasses.asdict(creds)))
        log.info("migrating a new Label Studio data dir in %s (first time only, ~25 s)", template)
        server = _launch_on_free_port(root, template, None, creds, timeout, name="template")
        server.stop()
        (template / ".ready").write_text(LS_VERSION)
    return template


def _launch(root: Path, data_dir: Path, port: int, creds: Credentials, timeout: float,
            name: str | None = None) -> Server:
    exe = root / "venv" / "bin" / "label-studio"
    logs = root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"{name or data_dir.name}.log"
    cmd = [str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir), "--log-level", "WARNING"]
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=str(data_dir), env=server_env(root, data_dir, creds),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    server = Server(url=url, port=port, pid=proc.pid, data_dir=data_dir, log_file=log_file,
                    credentials=creds, _proc=proc)
    try:
        _wait_ready(server, proc, timeout)
    except BaseException:
        _terminate(proc.pid, proc, 10)
        raise
    log.info("label studio %s up on %s (pid %d, data %s)", LS_VERSION, url, proc.pid, data_dir)
    return server


def _wait_ready(server: Server, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Token {server.token}"}
    with httpx.Client(timeout=5.0) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                if _listening(server.port):     # it died because another process holds the port
                    raise _PortTaken(f"port {server.port} is held by another process")
                raise ServerError(f"Label Studio exited with code {proc.returncode} while starting; see "
                                  f"{server.log_file}")
            try:
                r = http.get(f"{server.url}/api/current-user/whoami", headers=headers)
            except httpx.TransportError:
                time.sleep(0.5)
                continue
            me = r.json() if r.status_code == 200 else {}
            if server.username in (me.get("email"), me.get("username")):
                return
            # Something answers on our port that does not know our token or user: another server holds the
            # port and ours moved to port+1 (Label Studio does that silently). Start again elsewhere.
            if r.status_code in (200, 401, 403):
                raise _PortTaken(f"port {server.port} answered {r.status_code} without our user")
            time.sleep(0.5)
    raise ServerError(f"Label Studio did not answer on {server.url} within {timeout:.0f} s; see "
                      f"{server.log_file}")


def _listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def _pid_alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:      # our own child that exited: reap it
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _terminate(pid: int, proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM the process group this module created for the server (start_new_session), SIGKILL after
    `timeout`, then clear any child left in that group."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    group = pgid == pid

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(pgid, sig)
            else:
                os.kill(pid, sig)

    send(signal.SIGTERM)
    if not _wait_gone(pid, proc, timeout):
        send(signal.SIGKILL)
        _wait_gone(pid, proc, 5.0)
    if group:
        send(signal.SIGKILL)


def _wait_gone(pid: int, proc: subprocess.Popen | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (proc.poll() is not None) if proc is not None else not _pid_alive(pid):
            return True
        time.sleep(0.1)
    return False


# -- background server for the CLI (`make demo`) -----------------------------------------------------------
def _state_file(root: Path) -> Path:
    return root / "server.json"


def status(root: str | Path = DEFAULT_ROOT) -> dict:
    root = Path(root).resolve()
    info: dict = {"root": str(root), "installed_version": installed_version(root), "running": False}
    state = _state_file(root)
    if state.exists():
        s = json.loads(state.read_text())
        info.update({k: s[k] for k in ("url", "port", "pid", "data_dir")})
        info["running"] = _pid_alive(s["pid"]) and _is_our_server(s["pid"], s["data_dir"])
        if info["running"]:
            try:
                creds = credentials(root)
                r = httpx.get(f"{s['url']}/api/current-user/whoami",
                              headers={"Authorization": f"Token {creds.token}"}, timeout=5)
                info["healthy"] = r.status_code == 200
            except (httpx.TransportError, ServerError):
                info["healthy"] = False
    if (root / "credentials.json").exists():
        info["username"] = credentials(root).username
        info["credentials_file"] = str(root / "credentials.json")
    return info


def _is_our_server(pid: int, data_dir: str) -> bool:
    """The pid in server.json still runs the server we started (not a process that reused the pid)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True     # no /proc: trust the pid file
    return str(data_dir).encode() in cmd


def start_background(root: str | Path = DEFAULT_ROOT, port: int | None = None) -> dict:
    """Start (or find running) the persistent server `<root>/instances/default` and leave it running."""
    root = Path(root).resolve()
    current = status(root)
    if current.get("running") and current.get("healthy"):
        return current | {"started": False}
    server = start(root, port, fresh=False)
    server._proc = None     # detach: the process outlives this one
    _state_file(root).write_text(json.dumps({"url": server.url, "port": server.port, "pid": server.pid,
                                             "data_dir": str(server.data_dir)}))
    return status(root) | {"started": True}


def stop_background(root: str | Path = DEFAULT_ROOT) -> dict:
    root = Path(root).resolve()
    state = _state_file(root)
    if not state.exists():
        return {"stopped": False, "reason": "no server.json: nothing started by `labeling.studio.server start`"}
    s = json.loads(state.read_text())
    was_alive = _pid_alive(s["pid"]) and _is_our_server(s["pid"], s["data_dir"])
    if was_alive:
        _terminate(s["pid"], None, 15.0)
    state.unlink()
    return {"stopped": was_alive, "pid": s["pid"], "url": s["url"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m labeling.studio.server",
                                description="Manage the local Label Studio server (its own venv, its own data).")
    p.add_argument("command", choices=["install", "start", "stop", "status"])
    p.add_argument("--root", default=str(DEFAULT_ROOT), help="folder for the venv and data (default .labelstudio)")
    p.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if args.command == "install":
            result = install(args.root)
        elif args.command == "start":
            result = start_background(args.root, args.port)
        elif args.command == "stop":
            result = stop_background(args.root)
        else:
            result = status(args.root)
    except CurateError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
        if args.command == "start":
            print(f"stop it with: python -m labeling.studio.server stop --root {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
