"""`mcelsim simulate --workers N` killed with SIGKILL leaves no process behind (the workers
and multiprocessing's resource tracker follow their parent), and the rerun resumes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import psutil
import pytest

from simulator.cli import main

pytestmark = pytest.mark.xdist_group("campaign_kill")


@pytest.fixture(scope="module")
def ckpt(tiny_ckpt):
    return tiny_ckpt


def _count(db) -> int:
    try:
        con = sqlite3.connect(db, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def test_sigkill_of_a_worker_campaign_leaves_no_process_and_resumes(tmp_path, ckpt, capsys):
    db = tmp_path / "killed.db"
    args = ["simulate", str(ckpt), "--ber", "0:0.02:0.01", "--chips", "40", "--limit", "64",
            "--workers", "2", "--quiet", "--out", str(db)]
    proc = subprocess.Popen([sys.executable, "-m", "simulator.cli", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 240
    while _count(db) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    children = parent.children(recursive=True)
    assert proc.poll() is None, proc.stderr.read().decode()
    workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())]
    assert len(workers) == 2 and any("resource_tracker" in " ".join(c.cmdline())
                                     for c in children)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = _count(db)
    deadline = time.monotonic() + 10
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _alive(children)
    for p in left:  # do not leave them behind even when the test fails
        p.kill()
    assert not left, [" ".join(p.cmdline())[:80] for p in left]
    total = 3 * 40
    assert 4 <= n_before < total
    assert main([*args, "--workers", "1", "--json"]) == 0  # the rerun resumes
    doc = json.loads(capsys.readouterr().out)
    assert doc["n_reused"] == n_before and doc["n_computed"] == total - n_before
