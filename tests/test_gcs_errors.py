"""A bucket that cannot be used is one clear line before any work: no credentials (GCS answers an
anonymous caller 401), no permission (403), a bucket that does not exist (404, the emulator).

fake-gcs-server lets everyone do everything, so the refusals come from a local endpoint that
answers every request as GCS does in those cases; gcsfs is pointed at it the way it is pointed at
the emulator (STORAGE_EMULATOR_HOST)."""
from __future__ import annotations

import contextlib
import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from gcs_emulator import _forget_filesystems, _use_plain_gcsfs
from trainer_fixtures import REPO, cli_env

from igpt.data import DataError, pipeline, specs
from igpt.training.rundir import RunDir, WorkdirError

REFUSALS = {
    401: "Anonymous caller does not have storage.objects.create access to the Google Cloud Storage object.",
    403: "igpt@example.iam.gserviceaccount.com does not have storage.objects.create access to the object.",
}


@contextlib.contextmanager
def refusing_storage(code: int, monkeypatch) -> Iterator[dict[str, str]]:
    """A GCS endpoint answering every request with `code`; yields the environment pointing at it."""
    class Refuse(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            body = json.dumps({"error": {"code": code, "message": REFUSALS[code]}}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = _answer

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{server.server_port}", "FSSPEC_GCS_TOKEN": "anon",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "EPATH_USE_TF": "false"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _use_plain_gcsfs()
    _forget_filesystems()
    try:
        yield env
    finally:
        server.shutdown()
        _forget_filesystems()


@pytest.mark.parametrize("code, says", [
    (401, "no credentials were found, so the request went anonymous; run `gcloud auth application-default login`"),
    (403, "the credentials in use may not write there (403 Forbidden); grant them a Storage role on the bucket"),
])
def test_a_bucket_that_refuses_is_named_with_what_to_check(code, says, monkeypatch):
    with refusing_storage(code, monkeypatch):
        with pytest.raises(WorkdirError) as error:
            RunDir.at("gs://their-bucket/run").prepare()
        assert str(error.value).startswith(f"workdir: cannot write gs://their-bucket/run ({says}")
        cfg = specs.images("tfds:cifar10", res=8, tokenizer="palette:8", data_dir="gs://their-bucket/tfds")
        with pytest.raises(DataError, match=r"data.data_dir=gs://their-bucket/tfds \(for tfds:cifar10\): cannot read"):
            pipeline.load_examples(cfg, "train")


def test_the_trainer_stops_on_a_bucket_without_credentials_in_one_line(monkeypatch, tmp_path):
    with refusing_storage(401, monkeypatch) as env:
        out = subprocess.run(
            [sys.executable, "-m", "igpt.commands.train", f"--config={REPO / 'tests' / 'tiny_config.py'}",
             "--workdir=gs://their-bucket/run", f"--config.data.data_dir={tmp_path}"],
            env={**cli_env(), **env}, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "igpt: error: workdir: cannot write gs://their-bucket/run (no credentials were found, so the request went "
        "anonymous; run `gcloud auth application-default login`, or run on a VM whose service account has access)."]
    assert not list(tmp_path.iterdir()), "nothing prepared or fitted before the workdir was found unusable"


def test_the_report_stops_on_a_bucket_it_may_not_read_in_one_line(monkeypatch, tmp_path, capsys):
    from igpt.commands.report import main

    with refusing_storage(403, monkeypatch):
        assert main(["gs://their-bucket/exp", "--out", str(tmp_path / "report")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "igpt-report: error: cannot read gs://their-bucket/exp (the credentials in use may not read there (403 "
        "Forbidden); grant them a Storage role on the bucket (e.g. roles/storage.objectAdmin))"]
    assert not (tmp_path / "report").exists()
