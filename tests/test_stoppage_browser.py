"""The stop page in a real headless Chromium, and a complaint sent through it.

Chromium resolves `blocked-demo.test` to the stop page on loopback (`--host-resolver-rules`), as
an ASP's resolver would send it there. The page has no JavaScript, so the form is driven from
outside through Chromium's DevTools protocol (a small client over aiohttp websockets): fill the
fields, click the button, read the ticket, and later the decision. Screenshots at phone size are
kept as test artefacts (their paths are printed).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
from pathlib import Path

import aiohttp
import pytest
import tools
from authority_fixtures import RunningAuthority, start_authority
from test_stoppage_support import HOST, make_config, running, wait_for

from blocklist.config import validate_config
from blocklist.sync.config import SyncConfig
from blocklist.sync.follower import Follower
from signing import format_public_key

CHROMIUM = tools.path("chromium")
pytestmark = pytest.mark.tools("chromium")
PHONE = (390, 844)


def chromium_args(user_dir: Path, port: int, *extra: str) -> list[str]:
    return [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={user_dir}",
        f"--host-resolver-rules=MAP {HOST} 127.0.0.1:{port}",
        *extra,
    ]


async def run_chromium(args: list[str], timeout: float = 60) -> bytes:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, f"chromium exited with {proc.returncode}"
    return out


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
async def api(tmp_path: Path):
    running_authority = await start_authority(tmp_path / "authority")
    yield running_authority
    await running_authority.client.close()


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stoppage-screenshots")
    print(f"\nstop page screenshots: {path}")
    return path


async def test_rendered_in_english_and_arabic_with_phone_screenshots(
    tmp_path: Path, artefacts: Path
) -> None:
    from test_stoppage_support import write_list

    config = make_config(tmp_path, write_list(tmp_path))
    async with running(config) as stop:
        port = stop.port
        doms = {}
        for lang, accept in [("en", "en-US,en"), ("ar", "ar,en;q=0.5")]:
            out = await run_chromium(
                chromium_args(
                    tmp_path / f"profile-{lang}",
                    port,
                    f"--accept-lang={accept}",
                    "--dump-dom",
                    f"http://{HOST}/",
                )
            )
            doms[lang] = out.decode()
            shot = artefacts / f"stoppage-{lang}.png"
            await run_chromium(
                chromium_args(
                    tmp_path / f"profile-{lang}-shot",
                    port,
                    f"--accept-lang={accept}",
                    f"--screenshot={shot}",
                    f"--window-size={PHONE[0]},{PHONE[1]}",
                    "--hide-scrollbars",
                    f"http://{HOST}/",
                )
            )
            assert png_size(shot) == PHONE
            print(f"screenshot ({lang}): {shot}")
    assert '<html lang="en" dir="ltr">' in doms["en"]
    assert "Access to this address has been blocked" in doms["en"]
    assert '<html lang="ar" dir="rtl">' in doms["ar"]
    assert "تم حجب الوصول إلى هذا العنوان" in doms["ar"]
    for dom in doms.values():
        assert HOST in dom and "<script" not in dom


class DevTools:
    """A tiny Chrome DevTools Protocol client: commands by id, events into a queue."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.pending: dict[int, asyncio.Future] = {}
        self.events: asyncio.Queue = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            if "id" in data:
                future = self.pending.pop(data["id"], None)
                if future is not None and not future.done():
                    future.set_result(data)
            else:
                self.events.put_nowait(data)

    async def call(self, method: str, **params) -> dict:
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method, "params": params}))
        data = await asyncio.wait_for(future, 30)
        assert "error" not in data, data
        return data["result"]

    async def event(self, name: str, timeout: float = 30) -> dict:
        async def find() -> dict:
            while True:
                event = await self.events.get()
                if event["method"] == name:
                    return event["params"]

        return await asyncio.wait_for(find(), timeout)

    def drain(self) -> None:
        while not self.events.empty():
            self.events.get_nowait()

    async def js(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def load(self, action: str) -> int:
        """Run `action` (navigation or a click) and wait for the page; returns its HTTP status."""
        self.drain()
        if action.startswith("http"):
            await self.call("Page.navigate", url=action)
        else:
            await self.js(action)
        status = 0
        while True:
            event = await self.events.get()
            if event["method"] == "Network.responseReceived" and event["params"]["type"] == (
                "Document"
            ):
                status = event["params"]["response"]["status"]
            if event["method"] == "Page.loadEventFired":
                return status

    async def screenshot(self, path: Path) -> None:
        result = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(result["data"]))


@contextlib.asynccontextmanager
async def devtools(
    tmp_path: Path,
    port: int,
    *extra: str,
    profile_name: str = "cdp",
    lang: str = "en-US,en",
    size: tuple[int, int] = PHONE,
    mobile: bool = True,
):
    profile = tmp_path / f"profile-{profile_name}"
    proc = await asyncio.create_subprocess_exec(
        *chromium_args(
            profile,
            port,
            "--remote-debugging-port=0",
            f"--accept-lang={lang}",
            f"--window-size={size[0]},{size[1]}",
            *extra,
            "about:blank",
        ),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        active = profile / "DevToolsActivePort"
        await wait_for(lambda: active.exists() and active.read_text().count("\n") >= 1, 30)
        debug_port = int(active.read_text().split()[0])
        async with aiohttp.ClientSession() as session:

            async def page_target():
                async with session.get(f"http://127.0.0.1:{debug_port}/json/list") as resp:
                    targets = await resp.json()
                return next((t for t in targets if t["type"] == "page"), None)

            target = await wait_for(page_target, 30)
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = DevTools(ws)
                await cdp.call("Page.enable")
                await cdp.call("Network.enable")
                await cdp.call(
                    "Emulation.setDeviceMetricsOverride",
                    width=size[0],
                    height=size[1],
                    deviceScaleFactor=1,
                    mobile=mobile,
                )
                try:
                    yield cdp
                finally:
                    cdp.reader.cancel()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def test_complaint_through_chromium_reaches_the_authority_and_the_decision_shows(
    api: RunningAuthority, tmp_path: Path, artefacts: Path
) -> None:
    # The authority lists the name; the ASP's sync follower verifies and persists the list.
    _, body = await api.call(
        "alice", "POST", "/v1/entries", {"value": HOST, "hosting_country": "NL", "evidence": "E"}
    )
    entry_id = body["id"]
    await api.call("bob", "POST", f"/v1/entries/{entry_id}/approve")
    status, _ = await api.call("alice", "POST", "/v1/publish")
    assert status == 200
    url = str(api.client.make_url("")).rstrip("/")
    sync_data = {
        "sync": {
            "authority_url": url,
            "token": api.tokens["isp"],
            "root_keys": [format_public_key(api.root)],
            "state_dir": str(tmp_path / "sync-state"),
            "instance": "stop-1",
        }
    }
    follower = Follower(validate_config(sync_data, SyncConfig, "sync.toml"))
    await follower.poll_once()
    await follower.close()

    config = make_config(
        tmp_path,
        format_public_key(api.root),
        sync={"authority_url": url, "token": api.tokens["isp"]},
        complaints={"min_fill_seconds": 1},
    )
    async with running(config) as stop, devtools(tmp_path, stop.port) as cdp:
        assert await cdp.load(f"http://{HOST}/some/page") == 451
        assert await cdp.js("document.documentElement.lang") == "en"
        # Readable on a small phone: nothing wider than the screen.
        assert await cdp.js("document.documentElement.scrollWidth") <= PHONE[0]
        assert await cdp.js("document.cookie") == ""

        assert await cdp.load("document.querySelector('a.button').click()") == 200
        assert await cdp.js("location.pathname") == "/complaint"
        await cdp.js(
            """(() => {
                document.querySelector('input[name=role][value=hosting_provider]').click();
                document.querySelector('#reason').value =
                    'We host this customer; the reported album was removed last week.';
                document.querySelector('#contact').value = 'abuse@host.example';
                document.querySelector('#language').value = 'fr';
            })()"""
        )
        await cdp.screenshot(artefacts / "stoppage-form-en.png")
        await asyncio.sleep(1.2)  # a person takes longer than the minimum fill time
        assert await cdp.load("document.querySelector('button[type=submit]').click()") == 200
        ticket = await cdp.js("document.querySelector('#ticket').textContent")
        secret = await cdp.js("document.querySelector('#secret').textContent")
        assert ticket.startswith("T-") and len(secret) == 24
        await cdp.screenshot(artefacts / "stoppage-received-en.png")

        async def at_authority() -> list[dict]:
            _, listed = await api.call("olga", "GET", "/v1/complaints")
            return listed["complaints"]

        [filed] = await wait_for(at_authority)
        assert filed["host"] == HOST and filed["entry_id"] == entry_id
        assert filed["role"] == "hosting_provider" and filed["language"] == "fr"
        assert "album was removed" in filed["reason"]
        status, decided = await api.call(
            "carol",
            "POST",
            f"/v1/complaints/{filed['complaint_id']}/decide",
            {"decision": "upheld", "reasons": "Verified: the content is gone."},
        )
        assert status == 200, decided

        async def decision_shown() -> str | None:
            await cdp.load(f"http://{HOST}/complaint/status?lang=en")
            await cdp.js(
                f"document.querySelector('#ticket').value = {json.dumps(ticket.lower())};"
                f"document.querySelector('#secret').value = {json.dumps(secret)};"
            )
            await cdp.load("document.querySelector('button[type=submit]').click()")
            text = await cdp.js("document.body.innerText")
            return text if "complaint upheld" in text else None

        text = await wait_for(decision_shown, timeout=20, interval=0.3)
        assert "Verified: the content is gone." in text
        shot = artefacts / "stoppage-status-en.png"
        await cdp.screenshot(shot)
        assert png_size(shot)[0] == PHONE[0]
        print(f"screenshots (form, received, status): {artefacts}")
