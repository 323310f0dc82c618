"""A throwaway PostgreSQL cluster on loopback for the tests: initdb and pg_ctl in a temp dir.

The server refuses to run as root, so as root every program runs as the `postgres` user
(`runuser -u postgres --`) in a temp dir it owns. Trust authentication, for 127.0.0.1 and the
cluster's own unix socket directory only; `listen_addresses='127.0.0.1'`. Skipped with a clear
message only where PostgreSQL is absent, and never when CI=true: there it must run.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port


def server_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: `pg_config --bindir`, else Debian's versioned folders."""
    candidates: list[str] = []
    if shutil.which("pg_config"):
        found = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(found.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass
class Cluster:
    bindir: Path
    root: Path
    port: int

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *command: str) -> None:
        done = subprocess.run(_as_postgres(list(command)), capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = (self.root / "server.log").read_text() if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"{command[0]} failed: {done.stderr[-1500:]}\n{log[-1500:]}")

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", options, "-w", "-t", "30", "start")  # fmt: skip

    def stop(self) -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://postgres{secret}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; its name."""
        import psycopg

        name = "ledger_" + secrets.token_hex(4)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]  # a name made just above
        return name


def start_cluster() -> Iterator[Cluster]:
    bindir = server_bindir()
    if bindir is None:
        message = "PostgreSQL is not installed (no initdb/pg_ctl; `apt-get install postgresql`)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": CI must run the PostgreSQL tests")
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="x402-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = Cluster(bindir, root, free_port())
    cluster._run(str(bindir / "initdb"), "-D", str(cluster.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                 "--no-sync")  # fmt: skip
    # Trust only on the cluster's own socket directory and 127.0.0.1.
    hba = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
    subprocess.run(_as_postgres(["tee", str(cluster.data / "pg_hba.conf")]), input=hba, text=True,
                   capture_output=True, check=True)  # fmt: skip
    cluster.start()
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


#: Trust authentication ignores it; it is there so tests can check it never reaches a log or a message.
PASSWORD = "pw-" + secrets.token_hex(8)
