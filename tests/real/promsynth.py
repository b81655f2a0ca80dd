"""A real Prometheus fed synthetic series with timestamps of a simulated clock.

Releases take minutes to hours; their metrics are written as they happen, on the test's clock, through
Prometheus' remote-write receiver (`--web.enable-remote-write-receiver`, Debian's prometheus >= 2.33), so the
queries graylane sends at a simulated time are evaluated by Prometheus' own engine over samples that exist
at that time. The write request is protobuf (prometheus/prompb WriteRequest) in snappy's block format, both
encoded here by hand: the literal-only snappy encoding is valid snappy, and the four message types need a
few lines of protobuf.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from tests.real.conftest import free_port

Labels = tuple[tuple[str, str], ...]


# -- wire format ------------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # a length-delimited field (wire type 2)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _series(labels: Labels, samples: Iterable[tuple[int, float]]) -> bytes:
    """prompb.TimeSeries: labels (name=1, value=2), sorted by name, then samples (value=1 double, timestamp=2)."""
    body = b"".join(_field(1, _field(1, n.encode()) + _field(2, v.encode())) for n, v in sorted(labels))
    for ts_ms, value in samples:
        body += _field(2, b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(ts_ms))
    return body


def write_request(series: Mapping[Labels, list[tuple[int, float]]]) -> bytes:
    return b"".join(_field(1, _series(labels, samples)) for labels, samples in series.items() if samples)


def snappy(data: bytes) -> bytes:
    """Snappy block format with literals only (tag 61: two little-endian length bytes, chunks of 64 KiB)."""
    out = bytearray(_varint(len(data)))
    for at in range(0, len(data), 65536):
        chunk = data[at : at + 65536]
        out += bytes((61 << 2,)) + struct.pack("<H", len(chunk) - 1) + chunk
    return bytes(out)


# -- the server --------------------------------------------------------------------------------------------


class Prometheus:
    """Debian's prometheus on a free loopback port with an empty scrape config and the remote-write receiver."""

    def __init__(self) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail(
                "prometheus is not installed: run `make deps` (apt-get install prometheus)", pytrace=False
            )
        self.binary = binary
        self.work = Path(tempfile.mkdtemp(prefix="graylane-promsynth-"))
        (self.work / "prometheus.yml").write_text("global: {evaluation_interval: 1m}\nscrape_configs: []\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.last: dict[Labels, int] = {}  # newest timestamp written per series (samples must keep moving on)

    def start(self) -> Prometheus:
        for _ in range(5):  # a free port can be taken in between: try another
            port = free_port()
            log = (self.work / "prometheus.log").open("wb")
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--web.enable-remote-write-receiver",
                    "--storage.tsdb.retention.time=2d",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            self.url = f"http://127.0.0.1:{port}"
            if self._ready():
                return self
            self.stop()
        pytest.fail(
            f"prometheus did not start: {(self.work / 'prometheus.log').read_text()[-2000:]}", pytrace=False
        )

    def _ready(self) -> bool:
        deadline = time.monotonic() + 30
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return True
            except OSError:
                time.sleep(0.1)
        return False

    def write(self, series: Mapping[Labels, list[tuple[int, float]]]) -> int:
        """Remote-write `series` (timestamps in ms); samples not newer than the last written are left out."""
        fresh: dict[Labels, list[tuple[int, float]]] = {}
        for labels, samples in series.items():
            newest = self.last.get(labels, -1)
            kept = [(t, v) for t, v in samples if t > newest]
            if kept:
                fresh[labels] = kept
                self.last[labels] = kept[-1][0]
        if not fresh:
            return 0
        request = urllib.request.Request(
            f"{self.url}/api/v1/write",
            data=snappy(write_request(fresh)),
            method="POST",
            headers={
                "Content-Encoding": "snappy",
                "Content-Type": "application/x-protobuf",
                "X-Prometheus-Remote-Write-Version": "0.1.0",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status in (200, 204), resp.status
        except urllib.error.HTTPError as err:
            raise AssertionError(f"remote write refused: {err.code} {err.read()[:500]!r}") from err
        return sum(len(s) for s in fresh.values())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.work, ignore_errors=True)
