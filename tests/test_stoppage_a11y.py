"""Accessibility of every stop page, checked by a real engine in a real browser.

axe-core (tests/vendor/axe-core/axe.min.js, MPL-2.0, vendored from the npm package) is injected
over the DevTools protocol into headless Chromium showing the stop page, the complaint form, the
"received" page and the status page, in all five languages, at desktop and phone widths. No
serious or critical violation is allowed. Touch targets (language links, radio labels, buttons,
fields) are measured in the browser: at least 44 px high. The Arabic text is set larger than the
Latin so that it reads at a comparable size. Screenshots of each page are kept in
tests/artefacts/stoppage/ (ignored by git).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_stoppage_browser import CHROMIUM, devtools
from test_stoppage_support import HOST, make_config, running, write_list

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core" / "axe.min.js"
ARTEFACTS = Path(
    os.environ.get("CORDON_TEST_ARTEFACTS", Path(__file__).resolve().parent / "artefacts")
)
LANGS = ["fr", "en", "ar", "sw", "pt"]
WIDTHS = {"desktop": (1280, 900, False), "phone": (390, 844, True)}
TOUCH = 44

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason="headless Chromium is not installed (apt-get install chromium)",
)

RUN_AXE = """
(async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 3).map(n => n.target.join(' ')),
  }));
})()
"""

# Interactive elements a finger must hit: language links, radio labels, buttons, fields (not
# the honeypot, which is hidden from people and out of the tab order).
SMALL_TARGETS = """
(() => Array.from(document.querySelectorAll(
    'nav a, fieldset label, button, a.button, input[type=text]:not(#website), textarea, select'))
  .map(e => [e.tagName + (e.getAttribute('href') || e.textContent || '').slice(0, 30),
             e.getBoundingClientRect().height, e.getBoundingClientRect().width])
  .filter(([name, h, w]) => h < 44 || w < 44))()
"""


async def axe_violations(cdp) -> list[dict]:
    await cdp.call("Runtime.evaluate", expression=AXE.read_text(encoding="utf-8"))
    result = await cdp.call(
        "Runtime.evaluate", expression=RUN_AXE, awaitPromise=True, returnByValue=True
    )
    assert "exceptionDetails" not in result, result
    return result["result"]["value"]


async def shoot(cdp, name: str) -> None:
    directory = ARTEFACTS / "stoppage"
    directory.mkdir(parents=True, exist_ok=True)
    result = await cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    import base64

    (directory / f"{name}.png").write_bytes(base64.b64decode(result["data"]))


@pytest.mark.parametrize("width", list(WIDTHS))
async def test_every_page_in_every_language_passes_axe(tmp_path: Path, width: str) -> None:
    assert AXE.read_text(encoding="utf-8", errors="replace").startswith("/*! axe v4")
    config = make_config(
        tmp_path,
        write_list(tmp_path),
        complaints={"min_fill_seconds": 0},
        limits={"per_client_per_hour": 1000, "status_per_client_per_minute": 1000},
    )
    w, h, mobile = WIDTHS[width]
    found: dict[str, list] = {}
    small: dict[str, list] = {}
    font_px: dict[str, float] = {}
    checked = []
    async with running(config) as stop, devtools(tmp_path, stop.port) as cdp:
        await cdp.call(
            "Emulation.setDeviceMetricsOverride",
            width=w,
            height=h,
            deviceScaleFactor=1,
            mobile=mobile,
        )

        async def check(name: str) -> None:
            checked.append(name)
            found[name] = [
                v for v in await axe_violations(cdp) if v["impact"] in ("serious", "critical")
            ]
            small[name] = await cdp.js(SMALL_TARGETS)
            await shoot(cdp, f"{name}-{width}")

        for lang in LANGS:
            assert await cdp.load(f"http://{HOST}/some/page?lang={lang}") == 451
            assert await cdp.js("document.documentElement.lang") == lang
            font_px[lang] = float(
                await cdp.js("parseFloat(getComputedStyle(document.querySelector('p')).fontSize)")
            )
            await check(f"notice-{lang}")
            assert await cdp.load(f"http://{HOST}/complaint?lang={lang}") == 200
            await check(f"form-{lang}")
            await cdp.js(
                """(() => {
                    document.querySelector('input[name=role][value=site_owner]').click();
                    document.querySelector('#reason').value = 'This is my shop, not abuse.';
                })()"""
            )
            assert await cdp.load("document.querySelector('button[type=submit]').click()") == 200
            assert await cdp.js("document.querySelector('#ticket') !== null")
            await check(f"received-{lang}")
            assert await cdp.load("document.querySelector('main form button').click()") == 200
            assert await cdp.js("document.querySelector('#status').dataset.status") == "received"
            await check(f"status-{lang}")

    assert len(checked) == 4 * len(LANGS)
    problems = {k: v for k, v in found.items() if v}
    assert not problems, json.dumps(problems, indent=1, ensure_ascii=False)
    too_small = {k: v for k, v in small.items() if v}
    assert not too_small, json.dumps(too_small, indent=1, ensure_ascii=False)
    # Arabic script looks smaller than Latin at the same size: it is set larger.
    assert font_px["ar"] >= 1.15 * font_px["en"]
    print(f"\naxe-core: {len(checked)} pages at {width} width, screenshots in {ARTEFACTS}")
