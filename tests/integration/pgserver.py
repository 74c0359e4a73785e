"""A real PostgreSQL server for tests: initdb into a fresh directory, started
on a free loopback port, stopped (or killed with SIGKILL) by the test.

PostgreSQL refuses to run as root, so when the tests run as root the data
directory belongs to the `postgres` user (created by Debian's postgresql
package) and the server runs as that user. Authentication is `trust` on
127.0.0.1 only; the superuser is `cz`.
"""
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time


def pg_bindir():
    """The newest installed PostgreSQL's bin directory, or None."""
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                  key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(dirs[-1]) if dirs else None


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class PgServer:
    def __init__(self):
        self.bindir = pg_bindir()
        if not self.bindir:
            raise RuntimeError("PostgreSQL is not installed (run scripts/install-deps.sh)")
        self.base = tempfile.mkdtemp(prefix="cz-pg-")
        self.data = os.path.join(self.base, "data")
        self.user = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self.user = pw
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
        self._run([os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", "cz",
                   "--auth=trust", "-E", "UTF8", "--no-sync"])
        self.port = _free_port()
        self.logpath = os.path.join(self.base, "postgres.log")
        self.proc = None
        self.start()

    def _preexec(self):
        if self.user:
            os.setgid(self.user.pw_gid)
            os.setgroups([])
            os.setuid(self.user.pw_uid)

    def _run(self, argv):
        p = subprocess.run(argv, capture_output=True, text=True, preexec_fn=self._preexec, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {p.stdout}\n{p.stderr}")

    def start(self):
        log = open(self.logpath, "ab")
        self.proc = subprocess.Popen(
            [os.path.join(self.bindir, "postgres"), "-D", self.data, "-p", str(self.port),
             "-h", "127.0.0.1", "-k", self.base, "-c", "max_connections=300",
             "-c", "fsync=on", "-c", "synchronous_commit=on"],
            stdout=log, stderr=log, preexec_fn=self._preexec, start_new_session=True)
        log.close()
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{self.log()}")
            p = subprocess.run([os.path.join(self.bindir, "pg_isready"), "-h", "127.0.0.1",
                                "-p", str(self.port), "-U", "cz"], capture_output=True)
            if p.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"postgres did not become ready:\n{self.log()}")

    def log(self):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def conninfo(self, db="postgres"):
        return f"host=127.0.0.1 port={self.port} user=cz dbname={db}"

    def uri(self, db="postgres"):
        return f"postgresql://cz@127.0.0.1:{self.port}/{db}"

    def psql(self, sql, db="postgres"):
        p = subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                            "-d", self.conninfo(db), "-c", sql],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {p.stderr}")
        return p.stdout

    def create_db(self, name):
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def kill9(self):
        """SIGKILL the postmaster and every backend (the whole session)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()   # smart shutdown
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()
        shutil.rmtree(self.base, ignore_errors=True)
