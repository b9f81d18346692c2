"""Load jobs with several uvicorn workers: any worker answers status for (and stops) a job another
one runs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, cast

from tests.e2e.conftest import Gateway, start_gateway
from tests.e2e.test_admin_mounts import hoard


def test_load_status_from_any_worker(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, extra={"server": {"workers": 2}})
    try:
        s3 = gw.client()
        s3.create_bucket(Bucket="twoworkers")
        for i in range(30):
            s3.put_object(Bucket="twoworkers", Key=f"ds/obj-{i:02}", Body=os.urandom(300_000))
        done = hoard(gw, "load", "/twoworkers/ds", "--wait")
        assert done.returncode == 0, done.stderr
        # Status requests land on either worker (new connection each time); all see the same job.
        for _ in range(8):
            out = hoard(gw, "load", "status", "/twoworkers/ds")
            assert out.returncode == 0, out.stderr
            status = json.loads(out.stdout[out.stdout.index("{") :])
            assert status["state"] == "done" and status["objects_done"] == 30
        got = s3.get_object(Bucket="twoworkers", Key="ds/obj-07")
        assert got["ResponseMetadata"]["HTTPHeaders"]["x-cache"] == "HIT"
    finally:
        gw.stop()


def status_of(gw: Gateway, *args: str) -> dict[str, Any]:
    out = hoard(gw, "load", *args)
    assert out.returncode == 0, out.stderr
    return cast(dict[str, Any], json.loads(out.stdout[out.stdout.index("{") :]))


def test_load_stopped_from_any_worker_keeps_what_it_stored(tmp_path: Path) -> None:
    """`hoard load stop`, answered by either worker, stops a load halfway: its status says so and
    stays so, and a rerun fetches only what the stopped load had not stored."""
    # 30 objects of 300 kB behind a 2 MiB/s UFS budget: about 4.5 s of loading.
    gw = start_gateway(
        tmp_path, extra={"server": {"workers": 2}, "ufs": {"bandwidth": "2MiB/s", "burst": "256KiB"}}
    )
    try:
        bodies = {f"obj-{i:02}": os.urandom(300_000) for i in range(30)}
        (gw.data_dir / "slow" / "ds").mkdir(parents=True)
        for key, body in bodies.items():  # straight to the NAS: uploads would pay the budget too
            (gw.data_dir / "slow" / "ds" / key).write_bytes(body)
        total = sum(len(b) for b in bodies.values())
        assert status_of(gw, "/slow/ds")["state"] == "running"
        time.sleep(1.5)
        stopped = status_of(gw, "stop", "/slow/ds")
        assert stopped["state"] == "stopped", stopped
        assert 0 < stopped["objects_done"] < len(bodies), stopped
        time.sleep(1.5)  # nothing goes on behind the status
        for _ in range(4):  # either worker answers
            later = status_of(gw, "status", "/slow/ds")
            assert later["state"] == "stopped"
            assert later["objects_done"] == stopped["objects_done"], (stopped, later)

        rerun = status_of(gw, "/slow/ds", "--wait")
        assert rerun["state"] == "done" and rerun["objects_done"] == len(bodies), rerun
        assert rerun["bytes_fetched"] + rerun["bytes_skipped"] == total, rerun
        assert rerun["bytes_skipped"] >= stopped["objects_done"] * 300_000, (stopped, rerun)
        s3 = gw.client()
        for key, body in bodies.items():
            got = s3.get_object(Bucket="slow", Key=f"ds/{key}")
            assert got["Body"].read() == body
            assert got["ResponseMetadata"]["HTTPHeaders"]["x-cache"] == "HIT", key
    finally:
        gw.stop()
