"""An S3-compatible server on a free loopback port (moto), with a bucket and the Airflow connection
that reaches it: the object store a multi-machine deployment stages through."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from dataclasses import dataclass

from dissemination.devkit.local_sftp import free_port

CONN_ID = "staging_store"


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    key_id: str
    secret: str

    def url(self, prefix: str = "runs") -> str:
        return f"s3://{self.bucket}/{prefix}"

    def connection(self) -> str:
        """The connection as an ``AIRFLOW_CONN_<ID>`` value (JSON, endpoint in extra)."""
        return json.dumps({"conn_type": "aws", "login": self.key_id, "password": self.secret,
                           "extra": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}})

    def env(self, prefix: str = "runs") -> dict[str, str]:
        """What a worker needs to stage here."""
        return {"DISSEMINATION_STAGING_URL": self.url(prefix),
                "DISSEMINATION_STAGING_CONN_ID": CONN_ID,
                f"AIRFLOW_CONN_{CONN_ID.upper()}": self.connection()}

    def keys(self, prefix: str = "") -> list[str]:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.key_id,
                              aws_secret_access_key=self.secret, region_name="us-east-1")
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                  Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@contextlib.contextmanager
def s3_server():
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        found = S3Server(f"http://127.0.0.1:{port}", "staging", "AKIA" + secrets.token_hex(8),
                         secrets.token_urlsafe(24))
        boto3.client("s3", endpoint_url=found.endpoint, aws_access_key_id=found.key_id,
                     aws_secret_access_key=found.secret,
                     region_name="us-east-1").create_bucket(Bucket=found.bucket)
        yield found
    finally:
        server.stop()
