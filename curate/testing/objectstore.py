"""An S3 object store on this machine, for tests: moto's S3 server over HTTP on a free local port.

The code under test talks to it exactly as to Amazon S3: through Apache Beam's S3 file system (boto3)
with `--s3_endpoint_url` pointing here. Nothing leaves the machine. Buckets are made on demand;
`upload_tree` and `download_tree` move a folder in and out so a test can compare bytes.
"""

from __future__ import annotations

import logging
from pathlib import Path

ACCESS_KEY, SECRET_KEY, REGION = "curate-test", "curate-test-secret", "us-east-1"


class S3Server:
    """moto's S3 server on 127.0.0.1; `beam_options` are the flags that point Beam's FileSystems at it."""

    def __init__(self):
        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                                   aws_secret_access_key=SECRET_KEY, region_name=REGION)
        self.beam_options = [f"--s3_endpoint_url={self.endpoint}", f"--s3_access_key_id={ACCESS_KEY}",
                             f"--s3_secret_access_key={SECRET_KEY}", f"--s3_region_name={REGION}"]

    def bucket(self, name: str) -> str:
        """An empty bucket's URL (made if absent)."""
        existing = {b["Name"] for b in self.client.list_buckets().get("Buckets", [])}
        if name not in existing:
            self.client.create_bucket(Bucket=name)
        return f"s3://{name}"

    def _split(self, url: str) -> tuple[str, str]:
        bucket, _, key = url.removeprefix("s3://").partition("/")
        return bucket, key.strip("/")

    def keys(self, url: str) -> list[str]:
        """Every key below `url`, relative to it, in name order."""
        bucket, prefix = self._split(url)
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"][len(prefix):].lstrip("/") for o in page.get("Contents", [])]
        return sorted(out)

    def upload_tree(self, folder: Path, url: str) -> None:
        bucket, prefix = self._split(url)
        for f in sorted(Path(folder).rglob("*")):
            if f.is_file():
                self.client.upload_file(str(f), bucket, f"{prefix}/{f.relative_to(folder).as_posix()}".lstrip("/"))

    def download_tree(self, url: str, folder: Path) -> Path:
        bucket, prefix = self._split(url)
        for rel in self.keys(url):
            dest = Path(folder) / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.client.download_file(bucket, f"{prefix}/{rel}".lstrip("/"), str(dest))
        return Path(folder)

    def stop(self) -> None:
        self._server.stop()
