"""A throwaway PostgreSQL cluster for the tests: initdb + pg_ctl as an unprivileged user.

Used three ways:
  python -m tests.pgcluster start DIR   prints a DSN (CI: `.ci/run` exports it, then `stop DIR`)
  python -m tests.pgcluster stop DIR
  Cluster.start(dir) / .stop() / .restart()  from fixtures (a session cluster when no DSN is
                                             given, or a private one for tests that stop it)

The server runs as the invoking user, or as `postgres` (via runuser) when that is root: the
server refuses to run as root. Host connections need a SCRAM password, so the tests exercise the
same password path (`$SCOPEGATE_STORE_PASSWORD`) as production.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

USER = "scopegate"
PASSWORD = "scopegate-test-password"


def pg_bin() -> str | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(os.path.join(candidate, "pg_ctl"), os.X_OK):
            return candidate
    found = shutil.which("pg_ctl")
    return os.path.dirname(found) if found else None


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    root: Path
    port: int
    bindir: str

    @property
    def data(self) -> Path:
        return self.root / "data"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls, root: Path, port: int | None = None) -> Cluster:
        bindir = pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
        root.mkdir(parents=True, exist_ok=True)
        pwfile = root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
            shutil.chown(pwfile, "postgres")
        os.chmod(root, 0o700)
        cluster = cls(root, port or _free_port(), bindir)
        cluster._run(
            [
                f"{bindir}/initdb",
                "-D",
                str(cluster.data),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        cluster.boot()
        (root / "port").write_text(str(cluster.port))
        return cluster

    def boot(self) -> None:
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=on -c max_connections=300 -c shared_buffers=32MB"
        )
        self._run(
            [
                f"{self.bindir}/pg_ctl",
                "-D",
                str(self.data),
                "-o",
                opts,
                "-l",
                str(self.root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def halt(self, mode: str = "fast") -> None:
        self._run([f"{self.bindir}/pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"])

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.halt("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(
            _as_server_user(argv), cwd="/", capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:1])} failed: {done.stdout}{done.stderr}")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.pgcluster start|stop DIR", file=sys.stderr)
        return 2
    root = Path(argv[1]).resolve()
    if argv[0] == "start":
        cluster = Cluster.start(root)
        print(cluster.dsn())
        return 0
    bindir = pg_bin()
    if bindir is not None and (root / "port").exists():
        Cluster(root, int((root / "port").read_text()), bindir).stop()
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
