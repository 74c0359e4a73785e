"""Real memcached processes for the memcache tests: MemcachedServers(n)
starts n memcached daemons on free loopback ports (-I 2m so that App
Engine's 1 MiB values fit) and kills them on exit. kill(i) and restart(i)
take one down and bring it back on the same port."""
import os
import shutil
import socket
import subprocess

from conftest import free_port, wait_port

MEMCACHED = shutil.which("memcached") or "/usr/bin/memcached"


class MemcachedServers:
    def __init__(self, n=2):
        self.ports = [free_port() for _ in range(n)]
        self.procs = [None] * n

    @property
    def spec(self):
        return ",".join("127.0.0.1:%d" % p for p in self.ports)

    def start(self, i):
        args = [MEMCACHED, "-l", "127.0.0.1", "-p", str(self.ports[i]), "-U", "0",
                "-I", "2m", "-m", "64", "-t", "2"]
        if os.geteuid() == 0:
            args += ["-u", "root"]
        self.procs[i] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.ports[i])

    def kill(self, i):
        p = self.procs[i]
        if p and p.poll() is None:
            p.kill()
            p.wait()
        self.procs[i] = None

    def restart(self, i):
        self.kill(i)
        self.start(i)

    def command(self, i, line):
        """Send one text-protocol command to server i; its answer up to END."""
        with socket.create_connection(("127.0.0.1", self.ports[i]), timeout=5) as s:
            s.sendall(line.encode() + b"\r\n")
            out = b""
            while not out.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        return out.decode(errors="replace")

    def curr_items(self, i):
        for line in self.command(i, "stats").splitlines():
            if line.startswith("STAT curr_items "):
                return int(line.split()[2])
        raise AssertionError("memcached on port %d gave no curr_items" % self.ports[i])

    def __enter__(self):
        try:
            for i in range(len(self.ports)):
                self.start(i)
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        for i in range(len(self.procs)):
            self.kill(i)
