"""Distribution through a CDN: the authority pushes to a web root served by a real nginx, a
real Varnish caches in front of it, and 50 ASP followers converge through the cache.

Also the sinks alone: commit order, deferred deletes, the plain edition never pushed, and an
S3-compatible bucket (a loopback S3 server that checks SigV4 signatures).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from authority_fixtures import RunningAuthority, start_authority
from test_sync import base_url, delist, publish, sync_config

from blocklist.authority.sinks import (
    BackgroundPusher,
    Pusher,
    S3Sink,
    SinkError,
    WebRootSink,
    named_files,
    sigv4_headers,
)
from blocklist.sync.follower import Follower

pytestmark = pytest.mark.skipif(
    not (shutil.which("nginx") and shutil.which("varnishd")), reason="nginx and varnishd needed"
)

FOLLOWERS = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


NGINX_CONF = """
daemon off; worker_processes 1; user root; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;
events {{}}
http {{
  log_format hdrs '$request_method $request_uri $status auth="$http_authorization" '
                  'inm="$http_if_none_match"';
  access_log {tmp}/nginx-access.log hdrs;
  client_body_temp_path {tmp}/cb; proxy_temp_path {tmp}/pt; fastcgi_temp_path {tmp}/ft;
  uwsgi_temp_path {tmp}/ut; scgi_temp_path {tmp}/st;
  types {{ application/octet-stream bin; }}
  server {{
    listen 127.0.0.1:{port};
    root {root};
    location ~ /notification\\.bin$ {{ add_header Cache-Control "max-age=1"; }}
    location / {{ add_header Cache-Control "max-age=31536000, immutable"; }}
  }}
}}
"""


class Cdn:
    """nginx serving the web root, Varnish caching in front of it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.root = tmp / "www"
        self.root.mkdir(parents=True)
        self.origin_port, self.cache_port = free_port(), free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(NGINX_CONF.format(tmp=tmp, port=self.origin_port, root=self.root))
        self.nginx = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(tmp)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.varnish = subprocess.Popen(
            [
                "varnishd", "-F", "-j", "none", "-n", str(tmp / "varnish"),
                "-a", f"127.0.0.1:{self.cache_port}", "-b", f"127.0.0.1:{self.origin_port}",
                "-s", "malloc,32m",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        wait_http(f"http://127.0.0.1:{self.origin_port}/")
        wait_http(f"http://127.0.0.1:{self.cache_port}/")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cache_port}/hashed/notification.bin"

    def origin_log(self) -> list[str]:
        path = self.tmp / "nginx-access.log"
        return path.read_text().splitlines() if path.exists() else []

    def close(self) -> None:
        for proc in (self.varnish, self.nginx):
            proc.terminate()
        for proc in (self.varnish, self.nginx):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def cdn(tmp_path: Path) -> Iterator[Cdn]:
    c = Cdn(tmp_path / "cdn")
    yield c
    c.close()


@pytest.fixture
async def api(tmp_path: Path):
    running = await start_authority(tmp_path)
    yield running
    await running.client.close()


async def pushed(api: RunningAuthority, root: Path, timeout: float = 20) -> None:
    """Until the web root holds the notification just published (the push runs in a thread)."""
    local = api.authority.publish_dir / "hashed" / "notification.bin"
    target = root / "hashed" / "notification.bin"
    deadline = time.monotonic() + timeout
    while not (target.exists() and target.read_bytes() == local.read_bytes()):
        assert time.monotonic() < deadline, "the sink did not push the publication"
        await asyncio.sleep(0.05)


async def converge(followers: list[Follower], serial: int, timeout: float = 30) -> int:
    """Poll every follower not yet at `serial` until all are; returns the polls made."""
    polls = 0
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        behind = [f for f in followers if f.current is None or f.current.serial < serial]
        if not behind:
            return polls
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{len(behind)} followers still behind serial {serial}")
        results = await asyncio.gather(*(f.poll_once() for f in behind), return_exceptions=True)
        polls += len(behind)
        for r in results:
            if isinstance(r, Exception):
                raise r
        await asyncio.sleep(0.2)


async def test_fifty_followers_converge_through_nginx_and_varnish(
    api: RunningAuthority, cdn: Cdn, tmp_path: Path
) -> None:
    pusher = Pusher(api.authority.publish_dir, WebRootSink(cdn.root), cache_seconds=2)
    background = BackgroundPusher(pusher, retry_seconds=1)
    api.authority.publisher.add_listener(background.notify)
    followers = [
        Follower(
            sync_config(
                tmp_path / f"asp{i}",
                base_url(api),
                api.tokens["isp"],
                api.root,
                notification_url=cdn.url,
                instance=f"asp-{i}",
            )
        )
        for i in range(FOLLOWERS)
    ]
    try:
        polls = 0
        for serial, names in enumerate((["a.example", "b.example"], ["c.example"]), start=1):
            body = await publish(api, *names)
            assert body["serial"] == serial
            await pushed(api, cdn.root)
            polls += await converge(followers, serial)
        for entry in (1, 2):
            await delist(api, entry)
        await publish(api)
        await pushed(api, cdn.root)
        polls += await converge(followers, 3)
        assert {f.current.checksum for f in followers} == {
            api.authority.publisher.hashed_state.checksum
        }
        assert all(len(f.current.state) == 1 for f in followers)
        log = cdn.origin_log()
        # The cache absorbed most requests: every follower polled, few reached nginx.
        notification_hits = [line for line in log if "notification.bin" in line]
        print(
            f"\n{FOLLOWERS} followers, 3 serials: {polls} notification polls at the cache, "
            f"{len(notification_hits)} reached nginx, {len(log)} origin requests in all"
        )
        assert len(notification_hits) < polls / 3
        # No token ever reached the CDN's origin (the API token is for the API only).
        assert log and all('auth="-"' in line for line in log), log[:3]
        # The plain edition was never pushed.
        assert not (cdn.root / "plain").exists()
        assert background.last_error is None
    finally:
        background.close()
        for f in followers:
            await f.close()


def test_sink_pushes_files_before_the_notification_and_deletes_late(
    tmp_path: Path,
) -> None:
    """Order of puts and deletes, with a clock the test moves."""
    from test_publisher import make  # a real publisher in a temp directory

    pub = make(tmp_path / "pub")
    calls: list[tuple[str, str]] = []

    class Recording(WebRootSink):
        def put(self, path: str, data: bytes) -> None:
            calls.append(("put", path))
            super().put(path, data)

        def delete(self, path: str) -> None:
            calls.append(("delete", path))
            super().delete(path)

    clock = [1000.0]
    sink = Recording(tmp_path / "www")
    pusher = Pusher(tmp_path / "pub", sink, cache_seconds=300, clock=lambda: clock[0])
    from blocklist.state import Entry, Kind

    pub.publish([], [Entry.from_value("one.example", 1, Kind.DOMAIN)])
    pusher.push()
    assert calls[-1] == ("put", "hashed/notification.bin")
    assert all(p.startswith("hashed/") for _, p in calls)
    first_snapshot = calls[0][1]
    for _ in range(3):
        pub.new_session()  # each one names a fresh snapshot only
        calls.clear()
        clock[0] += 10
        pusher.push()
        _, names = named_files((tmp_path / "www/hashed/notification.bin").read_bytes())
        assert calls[-1] == ("put", "hashed/notification.bin")
        assert ("put", f"hashed/{names[0]}") in calls
        assert calls.index(("put", f"hashed/{names[0]}")) < len(calls) - 1
    # Nothing deleted within the cache lifetime, even though unnamed.
    assert (tmp_path / "www" / first_snapshot).exists()
    clock[0] += 301
    calls.clear()
    report = pusher.push()
    assert first_snapshot in report.deleted and ("delete", first_snapshot) in calls
    assert not (tmp_path / "www" / first_snapshot).exists()
    # The current files are never deleted.
    for name in names:
        assert (tmp_path / "www/hashed" / name).exists()
    assert not (tmp_path / "www/plain").exists()


def test_sigv4_matches_the_aws_published_example() -> None:
    # "Example: GET Object" in the AWS S3 Signature Version 4 documentation.
    headers = sigv4_headers(
        "GET",
        "https://examplebucket.s3.amazonaws.com/test.txt",
        {"Range": "bytes=0-9"},
        b"",
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "us-east-1",
        dt.datetime(2013, 5, 24, tzinfo=dt.UTC),
    )
    assert headers["authorization"].endswith(
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


class LoopbackS3:
    """A minimal S3-compatible bucket on loopback that checks each request's SigV4 signature
    and payload hash, and records the order of operations."""

    def __init__(self, access: str, secret: str) -> None:
        self.access, self.secret = access, secret
        self.objects: dict[str, bytes] = {}
        self.ops: list[tuple[str, str]] = []
        app = web.Application()
        app.router.add_route("*", "/{bucket}/{key:.*}", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        sent = {k.lower(): v for k, v in request.headers.items()}
        names = sent["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
        extra = {k: sent[k] for k in names if not k.startswith("x-amz-") and k != "host"}
        when = dt.datetime.strptime(sent["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        url = f"http://{sent['host']}{request.raw_path}"
        expected = sigv4_headers(
            request.method, url, extra, body, self.access, self.secret, "us-east-1", when
        )
        if expected["authorization"] != sent["authorization"]:
            return web.Response(status=403, text="SignatureDoesNotMatch")
        key = request.match_info["key"]
        self.ops.append((request.method, key))
        if request.method == "PUT":
            self.objects[key] = body
            return web.Response(status=200)
        if request.method == "DELETE":
            self.objects.pop(key, None)
            return web.Response(status=204)
        return web.Response(status=405)


async def test_s3_sink_pushes_in_commit_order(tmp_path: Path) -> None:
    from test_publisher import make

    from blocklist.state import Entry, Kind

    s3 = LoopbackS3("AKTEST", "secret-test")
    await s3.server.start_server()
    try:
        endpoint = str(s3.server.make_url("")).rstrip("/")
        pub = make(tmp_path / "pub")
        clock = [1000.0]
        pusher = Pusher(
            tmp_path / "pub",
            S3Sink(endpoint, "cordon", "AKTEST", "secret-test", prefix="lists/national"),
            cache_seconds=60,
            clock=lambda: clock[0],
        )
        pub.publish([], [Entry.from_value("one.example", 1, Kind.DOMAIN)])
        await asyncio.to_thread(pusher.push)
        assert s3.ops[-1] == ("PUT", "lists/national/hashed/notification.bin")
        assert s3.ops[0][1].startswith("lists/national/hashed/snapshot-")
        first = s3.ops[0][1]
        pub.new_session()
        clock[0] += 61
        await asyncio.to_thread(pusher.push)  # unnamed now: the clock starts
        assert first in s3.objects
        clock[0] += 61
        await asyncio.to_thread(pusher.push)
        assert ("DELETE", first) in s3.ops and first not in s3.objects
        # A wrong secret is refused by the bucket and reported, nothing half-pushed.
        bad = Pusher(
            tmp_path / "pub",
            S3Sink(endpoint, "cordon", "AKTEST", "wrong"),
            state_file=tmp_path / "bad.json",
        )
        with pytest.raises(SinkError, match="403"):
            await asyncio.to_thread(bad.push)
    finally:
        await s3.server.close()


def test_sink_config_errors_name_the_key(tmp_path: Path) -> None:
    from blocklist.authority.sinks import SinkSection
    from blocklist.config import ConfigError, validate_config

    ok = validate_config({"kind": "webroot", "path": str(tmp_path)}, SinkSection, "a.toml")
    assert ok.editions == ["hashed"] and isinstance(ok.build(tmp_path).sink, WebRootSink)
    for data, needle in (
        ({"kind": "webroot"}, "needs path"),
        ({"kind": "s3", "endpoint": "http://127.0.0.1:9"}, "bucket, access_key, secret_key_file"),
        ({"kind": "ftp"}, "kind"),
        ({"kind": "webroot", "path": "x", "editions": ["secret"]}, "editions"),
        ({"kind": "webroot", "path": "x", "cache_seconds": -1}, "cache_seconds"),
    ):
        with pytest.raises(ConfigError) as info:
            validate_config(data, SinkSection, "a.toml")
        assert needle in str(info.value) and "a.toml" in str(info.value), str(info.value)


async def test_configured_sink_follows_every_publication(tmp_path: Path) -> None:
    """`[[publication.sinks]]` in authority.toml: the running service pushes each publication to
    the web root by itself (no hand-made pusher), files before the notification."""
    root = tmp_path / "webroot"
    sinks = [{"kind": "webroot", "path": str(root), "cache_seconds": 0}]
    running = await start_authority(tmp_path, publication={"sinks": sinks})
    try:
        assert len(running.authority.sinks) == 1
        for serial, name in enumerate(["one.example", "two.example"], start=1):
            assert (await publish(running, name))["serial"] == serial
            await pushed(running, root)
            _, names = named_files((root / "hashed" / "notification.bin").read_bytes())
            assert names and all((root / "hashed" / n).exists() for n in names)
        assert not (root / "plain").exists()  # the plain edition stays off public hosts
        assert running.authority.sinks[0].last_error is None
    finally:
        await running.client.close()
        await running.authority.stop()
