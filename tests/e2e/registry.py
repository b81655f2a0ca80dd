"""A real image registry and real image pushes.

    registry = Registry.start(directory, notify_url, token)     Debian's docker-registry (CNCF Distribution
                                                                2.8) on 127.0.0.1, notifications to graylane
    layout = oci_image(directory / "v1.1.0", "v1.1.0")          a one-layer OCI image layout, its own per version
    registry.push(layout, "coding/cd-production/flask", "v1.1.0")   skopeo copy oci:... docker://127.0.0.1:PORT/...

The registry's config has one notification endpoint: graylane's public `/hooks/distribution` with the
`Authorization: Bearer <GRAYLANE_HOOK_TOKEN_DISTRIBUTION>` header the source checks (functions/providers/
sources/distribution.py). Distribution sends its events one at a time per endpoint and retries a refused
one with `backoff`; `registry.log` keeps its own account of every delivery.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from functions.local.ports import PortTaken, free_port, port_taken, retry_on_fresh_ports

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class RegistryFailed(AssertionError):
    """The registry did not start, or a push failed; the message has the log or skopeo's output."""


def binary(name: str) -> str:
    found = shutil.which(name)
    if not found:
        raise RegistryFailed(f"{name} is not installed: run `make deps` (infra/local/install-deps.sh)")
    return found


# -- images ----------------------------------------------------------------------------------------------------


def _blob(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def oci_image(directory: Path, version: str) -> Path:
    """An OCI image layout with one image tagged `version`: one gzipped layer holding /app/VERSION (so each
    version has its own layer and digest), a config naming the version."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        content = f"{version}\n".encode()
        info = tarfile.TarInfo("app/VERSION")
        info.size, info.mode, info.mtime = len(content), 0o644, 0
        tar.addfile(info, io.BytesIO(content))
    layer_tar = raw.getvalue()
    layer = gzip.compress(layer_tar, mtime=0)
    layer_digest, layer_size = _blob(blobs, layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["python", "app.py"], "Labels": {"org.opencontainers.image.version": version}},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"]},
    }
    config_digest, config_size = _blob(blobs, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer_digest,
                "size": layer_size,
            }
        ],
    }
    manifest_digest, manifest_size = _blob(blobs, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": version},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return directory


# -- the registry ----------------------------------------------------------------------------------------------


def registry_config(port: int, storage: Path, notify_url: str, token: str) -> dict[str, Any]:
    return {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
        "notifications": {
            "endpoints": [
                {
                    "name": "graylane",
                    "url": notify_url,
                    "headers": {"Authorization": [f"Bearer {token}"]},
                    "timeout": "5s",
                    "threshold": 5,
                    "backoff": "1s",
                    "ignoredmediatypes": ["application/octet-stream"],
                }
            ]
        },
    }


@dataclass
class Registry:
    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    _versions: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(
        cls, directory: Path, notify_url: str, token: str, port: int = 0, timeout: float = 30.0
    ) -> Registry:
        """On `port` (chosen before, so images could be named after it; a free one if it was taken meanwhile)."""
        directory.mkdir(parents=True, exist_ok=True)
        exe = binary("docker-registry")
        found: list[Registry] = []
        ports = [port or free_port()]

        def start() -> None:
            port = ports[-1]
            config = directory / "config.yml"
            config.write_text(
                json.dumps(registry_config(port, directory / "storage", notify_url, token), indent=1)
            )
            log = (directory / "registry.log").open("ab")
            process = subprocess.Popen(
                [exe, "serve", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=directory,
            )
            log.close()
            registry = cls(port, directory, process)
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    text = registry.log_text()
                    if port_taken(text[-2000:]):
                        raise PortTaken(f"docker-registry: port {port} taken")
                    raise RegistryFailed(
                        f"docker-registry exited with {process.returncode}:\n{registry.tail()}"
                    )
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1) as r:
                        if r.status == 200:
                            found.append(registry)
                            return
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    registry.stop()
                    raise RegistryFailed(
                        f"docker-registry not answering /v2/ within {timeout:.0f} s:\n{registry.tail()}"
                    )
                time.sleep(0.1)

        retry_on_fresh_ports("docker-registry", start, lambda: ports.append(free_port()))
        return found[-1]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def push(self, layout: Path, repository: str, tag: str, timeout: float = 120.0) -> str:
        """skopeo copy of the layout's image to <host>/<repository>:<tag>; returns skopeo's output."""
        argv = [
            binary("skopeo"),
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--retry-times=2",
            f"oci:{layout}:{tag}",
            f"docker://{self.host}/{repository}:{tag}",
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RegistryFailed(
                f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr[-2000:]}\n"
                f"registry log:\n{self.tail(30)}"
            )
        return done.stdout + done.stderr

    def version_of(self, image: str) -> str:
        """The version a pod of `image` runs, as a runtime pulling it would find it: for an image of this registry
        pinned by digest, the `org.opencontainers.image.version` label of the config the manifest names;
        otherwise the tag (tests.traefik.pods.image_version)."""
        from tests.traefik.pods import image_version

        name, _, digest = image.partition("@")
        if not digest or not name.startswith(f"{self.host}/"):
            return image_version(image)
        if image not in self._versions:
            rest = name.removeprefix(f"{self.host}/")
            repository = rest.rsplit(":", 1)[0] if ":" in rest else rest
            accept = f"{OCI_MANIFEST}, application/vnd.docker.distribution.manifest.v2+json"
            request = urllib.request.Request(
                f"http://{self.host}/v2/{repository}/manifests/{digest}", headers={"Accept": accept}
            )
            with urllib.request.urlopen(request, timeout=5) as r:
                manifest = json.load(r)
            with urllib.request.urlopen(
                f"http://{self.host}/v2/{repository}/blobs/{manifest['config']['digest']}", timeout=5
            ) as r:
                config = json.load(r)
            self._versions[image] = str(config["config"]["Labels"]["org.opencontainers.image.version"])
        return self._versions[image]

    def tags(self, repository: str) -> list[str]:
        with urllib.request.urlopen(f"http://{self.host}/v2/{repository}/tags/list", timeout=5) as r:
            return list(json.load(r).get("tags") or [])

    def log_text(self) -> str:
        try:
            return (self.directory / "registry.log").read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def notifications(self) -> list[str]:
        """The registry's log lines about deliveries to graylane (sent, failed, retried)."""
        return [line for line in self.log_text().splitlines() if "graylane" in line or "notification" in line]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
