"""The playground: its JSON endpoints over HTTP on the shipped model (images checked for shape, not
blank, and the class the MNIST classifier sees), bad requests, requests from several clients at
once, and the page itself in headless Chromium (Debian's chromium, driven by Playwright) when both
are installed."""

import base64
import io
import json
import shutil
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from tinydiff.serve import Playground, handler


@pytest.fixture(scope="module")
def server():
    from http.server import ThreadingHTTPServer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler(Playground("pretrained:mnist")))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def post(url: str, action: str, body, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/api/{action}", data=data), timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def cells(data_url: str, n: int, nrow: int, size: int = 28, scale: int = 4, padding: int = 2) -> np.ndarray:
    """The n images of a grid PNG the server sent (viz.make_grid's layout, enlarged ``scale`` times)."""
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("L"))
    picture = picture[::scale, ::scale]
    step = size + padding
    return np.stack(
        [picture[padding + (i // nrow) * step :][:size, padding + (i % nrow) * step :][:, :size] for i in range(n)]
    )


def classify(images: np.ndarray) -> torch.Tensor:
    from tinydiff.metrics.classifier import class_probabilities, load_classifier

    return class_probabilities(load_classifier("mnist"), torch.from_numpy(images[:, None].copy())).argmax(1)


def test_sample_gives_the_requested_digit_and_says_what_it_cost(server):
    status, answer = post(server, "sample", {"class": 3, "n": 8, "steps": 10, "sampler": "dpm++2m"})
    assert status == 200 and answer["nfe"] == 10 and answer["seconds"] > 0 and answer["waited_s"] >= 0
    images = cells(answer["image"], 8, nrow=3)
    assert images.std() > 20  # not blank
    assert (classify(images) == 3).float().mean() >= 0.75


def test_forward_process_and_latent_space(server):
    clean = post(server, "forward", {"image": 0, "t": 0})[1]
    noisy = post(server, "forward", {"image": 0, "t": 999})[1]
    assert clean["alpha_bar"] > 0.99 > 1e-3 > noisy["alpha_bar"] and clean["snr"] > noisy["snr"]
    x0, x_t = cells(clean["image"], 2, nrow=2).astype(float)
    assert np.abs(x0 - x_t).mean() < 10  # t = 0: the image itself
    x0, x_t = cells(noisy["image"], 2, nrow=2).astype(float)
    assert np.abs(x0 - x_t).mean() > 40  # t = 999: noise
    status, latent = post(server, "latent", {"a": 1, "b": 8, "steps": 20, "frames": 3})
    assert status == 200 and latent["mse"] < 0.05  # the DDIM round trip
    merged = cells(latent["merge"], 6, nrow=3)
    assert merged[:3].std() > 20 and merged[3:].std() > 20  # the merges, and the pixel mix below them
    middle = cells(latent["frames"][1], 4, nrow=4)  # lambda = 1/2: slerp, linear, merge, pixel mix
    assert len(latent["frames"]) == 3 and middle.std() > 20


def test_bad_requests_get_one_line_and_400(server):
    for action, body, message in [
        ("sample", {"n": 1000}, "n must be an integer in [1, 64]"),
        ("sample", {"steps": "many"}, "steps must be an integer"),
        ("sample", {"sampler": "magic"}, "sampler must be one of"),
        ("sample", {"prompt": "nine"}, "not text-conditioned"),
        ("forward", {"image": "data:image/png;base64,AAAA"}, "not a readable PNG"),
        ("forward", {"image": "/etc/passwd"}, "a test-set index or a PNG"),
        ("explode", {}, "unknown action"),
    ]:
        status, answer = post(server, action, body)
        assert status == 400 and message in answer["error"] and "\n" not in answer["error"], (action, answer)
    assert post(server, "sample", None, raw=b"{not json")[0] == 400
    # a body announced as too large is refused before it is read
    import http.client

    connection = http.client.HTTPConnection(server.removeprefix("http://"), timeout=30)
    connection.putrequest("POST", "/api/sample")
    connection.putheader("Content-Length", str(600 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 400 and "at most" in json.loads(response.read())["error"]
    connection.close()


def test_a_distilled_student_is_served_with_the_sampler_and_steps_it_records():
    playground = Playground("pretrained:mnist-2step")
    info = playground.info()
    assert info["defaults"] == {"sampler": "ddim", "steps": 2} and info["samplers"][0] == "ddim"
    answer = playground.handle("sample", {"class": 7, "n": 16})  # no sampler options: the student's own
    assert answer["nfe"] == 2
    assert (classify(cells(answer["image"], 16, nrow=4)) == 7).float().mean() >= 0.7  # the shipped models' bar
    assert Playground("pretrained:mnist").info()["defaults"] == {"sampler": "dpm++2m", "steps": 20}


def test_a_text_model_takes_prompts(tmp_path):
    from tinydiff.training import TrainConfig, Trainer

    run = tmp_path / "text"
    Trainer(TrainConfig(data="digits", out=str(run), steps=2, batch_size=8, sample_grid=0, text="words")).run(False)
    playground = Playground(str(run))
    assert playground.info()["text"] and not Playground("pretrained:mnist").info()["text"]
    answer = playground.handle("sample", {"prompt": "nine | a hand-drawn 7 | one", "n": 3, "steps": 3, "guidance": 2})
    assert answer["nfe"] == 6  # guided: two evaluations per step
    picture = Image.open(io.BytesIO(base64.b64decode(answer["image"].split(",", 1)[1])))
    assert picture.width > 2 * picture.height  # a column per prompt: one row of three
    with pytest.raises(Exception, match="at most 1000 characters"):
        playground.handle("sample", {"prompt": "x" * 1001})


def test_requests_from_many_clients_are_served_one_at_a_time(server):
    body = {"n": 4, "steps": 4, "class": "all"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post(server, "sample", body)[1], range(8)))
    waits = sorted(a["waited_s"] for a in answers)
    computing = min(a["seconds"] for a in answers)
    assert len(answers) == 8 and all("image" in a for a in answers)
    assert waits[-1] >= 6 * computing * 0.8  # the last one waited for (nearly) all the others


@pytest.mark.skipif(
    shutil.which("chromium") is None or __import__("importlib").util.find_spec("playwright") is None,
    reason="needs Debian's chromium and playwright",
)
def test_the_page_in_a_real_browser(server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(server)
        page.wait_for_selector("body[data-ready='1']")
        assert "pretrained:mnist" in page.inner_text("#model")
        page.select_option("[name=class]", "7")
        page.fill("[name=guidance]", "2")
        page.fill("[name=steps]", "16")
        page.fill("[name=n]", "4")
        page.click("#sample-go")
        page.wait_for_function("document.getElementById('sample-image').src.startsWith('data:')")
        images = cells(page.get_attribute("#sample-image", "src"), 4, nrow=2)
        page.screenshot(path=str(tmp_path / "sample-page.png"))
        assert (classify(images) == 7).float().mean() >= 0.75, classify(images)
        assert "network evaluations" in page.inner_text("#sample-status")
        # draw a stroke on the forward-process canvas, then slide t
        page.click("nav button[data-page=forward]")
        box = page.locator("#forward-canvas").bounding_box()
        page.mouse.move(box["x"] + 70, box["y"] + 20)
        page.mouse.down()
        page.mouse.move(box["x"] + 70, box["y"] + 120, steps=8)
        page.mouse.up()
        page.wait_for_function("document.getElementById('forward-image').src.startsWith('data:')")
        drawn = cells(page.get_attribute("#forward-image", "src"), 2, nrow=2)[0]
        assert drawn[:, 12:16].mean() > 100 > drawn[:, :6].mean()  # a vertical bar in the middle
        # latent space: invert two test digits, then move the mixing-weight slider
        page.click("nav button[data-page=latent]")
        page.fill("#latent-steps", "10")
        page.fill("#latent-frames", "3")
        page.click("#latent-go")
        assert page.inner_text("#latent-status").startswith("working...")  # a ticking clock while it computes
        page.wait_for_function("document.getElementById('latent-frame').src.startsWith('data:')", timeout=60_000)
        middle = page.get_attribute("#latent-frame", "src")
        page.locator("#latent-lambda").fill("0")
        assert page.get_attribute("#latent-frame", "src") != middle and "lambda = 0.00" in page.inner_text("#latent")
        # a bad request shows its one line on the page
        page.click("nav button[data-page=sample]")
        page.fill("[name=n]", "500")
        page.click("#sample-go")
        page.wait_for_selector("#sample-status.error")
        assert "n must be an integer" in page.inner_text("#sample-status")
        browser.close()
