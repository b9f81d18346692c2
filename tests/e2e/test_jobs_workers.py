"""Load jobs with several uvicorn workers: any worker answers status for a job another one runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.e2e.conftest import start_gateway
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
