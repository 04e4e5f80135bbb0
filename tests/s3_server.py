"""A real S3-compatible server for the tests: moto in server mode on 127.0.0.1, in a thread of the test process.

``s3`` (a fixture) points the standard ``AWS_*`` variables (``AWS_ENDPOINT_URL`` included) at the server, for this
process and the subprocesses a test starts, and gives each test its own buckets. Import the fixtures into a test
module with ``pytest_plugins = ("s3_server",)``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import pytest


@dataclass
class S3:
    """The server of one test: its endpoint and a boto3 client for looking at the buckets."""

    endpoint: str
    client: object

    def bucket(self) -> str:
        """A new empty bucket's name."""
        name = f"mlray-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)  # type: ignore[attr-defined]
        return name

    def keys(self, bucket: str, prefix: str = "", markers: bool = False) -> list[str]:
        """Every object key in ``bucket`` under ``prefix``, sorted; without ``markers``, the empty "folder"
        objects (keys ending in ``/``, which pyarrow leaves where it deletes a folder's last file) are left out."""
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")  # type: ignore[attr-defined]
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys += [o["Key"] for o in page.get("Contents", []) if markers or not o["Key"].endswith("/")]
        return sorted(keys)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        """Write an object directly (to plant leftovers)."""
        self.client.put_object(Bucket=bucket, Key=key, Body=data)  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (a free port), for the whole session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request in the test output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path_factory) -> S3:
    """The session's S3 server, with the ``AWS_*`` variables of this test (and its subprocesses) pointing at it."""
    import boto3

    env = {
        "AWS_ENDPOINT_URL": s3_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path_factory.getbasetemp() / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path_factory.getbasetemp() / "no-aws-credentials"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return S3(s3_server, boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1"))
