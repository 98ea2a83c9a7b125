"""The playground under load: CLIENTS browsers at once, each sending REQUESTS sample requests
(the page's defaults: 20 images, dpm++2m, 20 steps) to `tinydiff serve` on the shipped MNIST model,
over loopback. Prints the latency each client saw (waiting plus computing) and writes
benchmarks/results/serve_load.json. With --screenshots DIR it also drives every page in headless
Chromium (Debian's chromium through Playwright) and saves a screenshot of each.

    .venv/bin/python benchmarks/serve_load.py [--clients 8] [--requests 4] [--screenshots docs]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer
from pathlib import Path

from machine import cpu

from tinydiff.serve import Playground, handler

BODY = {"n": 20, "steps": 20, "sampler": "dpm++2m", "class": "all"}


def request(url: str) -> dict:
    started = time.perf_counter()
    data = json.dumps(BODY).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{url}/api/sample", data=data), timeout=600) as r:
        answer = json.loads(r.read())
    return {"latency_s": time.perf_counter() - started, "waited_s": answer["waited_s"], "seconds": answer["seconds"]}


def screenshots(url: str, folder: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        page.click("#sample-go")
        page.wait_for_function("document.getElementById('sample-image').src.startsWith('data:')")
        page.screenshot(path=str(folder / "playground-sample.png"))
        page.click("nav button[data-page=trajectory]")
        page.click("#trajectory-go")
        page.wait_for_function("document.getElementById('trajectory-image').src.startsWith('data:')")
        page.locator("#trajectory-step").fill("8")
        page.screenshot(path=str(folder / "playground-trajectory.png"))
        page.click("nav button[data-page=forward]")
        box = page.locator("#forward-canvas").bounding_box()
        page.mouse.move(box["x"] + 45, box["y"] + 25)
        page.mouse.down()
        for x, y in ((95, 25), (60, 120)):  # a hand-drawn 7
            page.mouse.move(box["x"] + x, box["y"] + y, steps=10)
        page.mouse.up()
        page.wait_for_function("document.getElementById('forward-image').src.startsWith('data:')")
        page.screenshot(path=str(folder / "playground-forward.png"))
        page.click("nav button[data-page=latent]")
        page.click("#latent-go")
        page.wait_for_function("document.getElementById('latent-merge').src.startsWith('data:')", timeout=120_000)
        page.screenshot(path=str(folder / "playground-latent.png"), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--screenshots", default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler(Playground("pretrained:mnist")))
    startup = time.perf_counter() - started
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    request(url)  # warm-up
    alone = [request(url) for _ in range(3)]
    with ThreadPoolExecutor(args.clients) as pool:
        loaded = list(pool.map(lambda _: request(url), range(args.clients * args.requests)))
    if args.screenshots:
        screenshots(url, Path(args.screenshots))
    httpd.shutdown()

    def summary(rows):
        latency = sorted(r["latency_s"] for r in rows)
        return {
            "requests": len(rows),
            "median_latency_s": round(statistics.median(latency), 3),
            "p95_latency_s": round(latency[int(0.95 * (len(latency) - 1))], 3),
            "median_computing_s": round(statistics.median(r["seconds"] for r in rows), 3),
            "max_waited_s": round(max(r["waited_s"] for r in rows), 3),
        }

    result = {
        "machine": cpu(),
        "request": BODY,
        "startup_s": round(startup, 2),
        "one_client": summary(alone),
        f"{args.clients}_clients": summary(loaded),
    }
    print(f"{'':<12}{'requests':>9}{'median s':>10}{'p95 s':>8}{'computing s':>13}{'max waited s':>14}")
    for name in ("one_client", f"{args.clients}_clients"):
        row = result[name]
        print(
            f"{name:<12}{row['requests']:>9}{row['median_latency_s']:>10}{row['p95_latency_s']:>8}"
            f"{row['median_computing_s']:>13}{row['max_waited_s']:>14}"
        )
    print(f"start-up (loading the model): {result['startup_s']} s on {result['machine']}")
    out = Path(__file__).parent / "results" / "serve_load.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
