"""How fast a calibration query reaches the participant's screen.

A whole ``bci-affect calibrate`` session on the sample recording, replayed through LSL in real
time, with the web UI open in Debian's chromium (driven by playwright, which answers every
question as soon as it appears). For every query the label store holds the wall-clock time the
policy triggered it and the time the page reported it painted (``POST /shown``, sent after the
next frame); the difference is the display latency. Target: < 200 ms.

Two sessions in the same run: without personalisation (baseline) and with a personalisation
round after every answer (the training competes for the CPU). Queries triggered before the page
connected are left out (nobody could see them).

Run::

    .venv/bin/python benchmarks/calibration_display.py [--budget 12] [--speed 1]
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration.store import LabelStore  # noqa: E402
from tests.calibration.util import DEMO  # noqa: E402

CLI = str(Path(sys.executable).parent / "bci-affect")
CHROMIUM = "/usr/bin/chromium"


def session_latencies(data: Path, *, budget: int, speed: float, personalise: bool) -> np.ndarray:
    """Display latencies (ms) of one session's queries asked while the page was open."""
    args = [
        CLI, "calibrate", "--subject", "B01", "--data-dir", str(data), "--port", "0",
        "--replay", str(DEMO), "--speed", str(speed), "--budget", str(budget),
        "--span-s", "2", "--min-interval-s", "4", "--warmup", "8", "--top-fraction", "1",
        "--rest-s", "0", "--personalise-every", "1" if personalise else "0",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    url_ready = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "in a browser" in line:
                url_ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not url_ready.wait(120):
        proc.kill()
        raise SystemExit("the session did not start:\n" + "".join(lines))
    url = re.search(r"(http://\S+)", next(x for x in lines if "in a browser" in x)).group(1)
    from playwright.sync_api import expect, sync_playwright  # noqa: PLC0415

    rng = random.Random(0)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page()
        page.goto(url)
        expect(page.locator("#connection")).to_have_text("connected", timeout=30_000)
        connected = time.time()
        form, ended = page.locator("#form"), page.locator("#connection")
        while ended.inner_text() != "session ended":
            try:
                form.wait_for(state="visible", timeout=1000)
            except Exception:  # noqa: BLE001  (no question this second)
                continue
            for scale in ("valence", "arousal"):
                page.get_by_role("button", name=f"{scale} {rng.randint(1, 9)}", exact=True).click()
            page.get_by_role("button", name="Submit").click()
            expect(form).to_be_hidden(timeout=30_000)
        browser.close()
    if proc.wait(120) != 0:
        raise SystemExit("the session failed:\n" + "".join(lines))
    with LabelStore(data / "calibration.sqlite") as store:
        ses = store.latest_session("B01", unfinished_only=False)
        queries = store.queries(ses.id)
    return np.array(
        [
            1e3 * (q.shown_wall - q.triggered_wall)
            for q in queries
            if q.shown_wall is not None and q.triggered_wall >= connected
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=int, default=12, help="questions per session (12)")
    ap.add_argument("--speed", type=float, default=1.0, help="replay speed (1 = real time)")
    args = ap.parse_args()
    rows = []
    for name, personalise in (("no personalisation", False), ("a round after every answer", True)):
        with tempfile.TemporaryDirectory() as tmp:
            lat = session_latencies(
                Path(tmp), budget=args.budget, speed=args.speed, personalise=personalise
            )
        if lat.size == 0:
            raise SystemExit(f"{name}: no query was shown while the page was open")
        rows.append((name, lat))
        print(
            f"{name}: {lat.size} queries, median {np.median(lat):.0f} ms, "
            f"p95 {np.percentile(lat, 95):.0f} ms, max {lat.max():.0f} ms",
            flush=True,
        )
    print("\n| session | queries | median | p95 | max | target < 200 ms |")
    print("|---|---|---|---|---|---|")
    for name, lat in rows:
        met = "met" if lat.max() < 200 else "missed"
        print(
            f"| {name} | {lat.size} | {np.median(lat):.0f} ms | {np.percentile(lat, 95):.0f} ms "
            f"| {lat.max():.0f} ms | {met} |"
        )
    base, load = (np.median(r[1]) for r in rows)
    print(f"\nmedian ratio (rounds / none): {load / base:.2f}")


if __name__ == "__main__":
    main()
