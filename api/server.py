"""Run the app under a real uvicorn server in a background thread (integration tests, benchmarks, notebooks).

    with ServerThread(create_app(settings)) as server:
        httpx.get(server.url + "/health")

Label Studio must reach our webhook and ML backend over HTTP, which FastAPI's in-process TestClient cannot offer.
"""

import socket
import threading
import time
from typing import Self

import uvicorn
from fastapi import FastAPI

from curation.errors import CurateError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn in a daemon thread; `start()` returns once the app's startup (lifespan) has finished."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning"):
        self.app, self.host = app, host
        self.port = port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level=log_level,
                                                    access_log=False, lifespan="on"))
        self._thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise CurateError(f"the server on {self.url} stopped during startup (see the log)")
            if time.monotonic() > deadline:
                raise CurateError(f"the server on {self.url} did not start within {timeout:g} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
