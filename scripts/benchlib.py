"""Helpers shared by scripts/bench, scripts/bench-clip and scripts/soak: ports, /proc figures
of a process, and waiting on the gateway's HTTP API."""
import json
import os
import socket
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def servers_conf(api, video):
    """The gateway's `[api]` and `[video]` sections on loopback."""
    return f"[api]\nenabled = true\nhost = \"127.0.0.1\"\nport = {api}\n[video]\nhost = \"127.0.0.1\"\nport = {video}\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU time of a process, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kb(pid):
    """Resident memory of a process, kB (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def wait_http(port, path, cond, timeout):
    """GETs a JSON document on 127.0.0.1:`port` until `cond(body)` holds; exits after `timeout` s."""
    import urllib.request
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                body = json.load(r)
                if cond(body):
                    return body
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {path}")
