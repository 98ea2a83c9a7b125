"""``tinydiff serve``: a playground in the browser over one checkpoint.

The stack is the standard library's threading HTTP server and one static page (serve.html, plain
JavaScript): nothing to install, and a listening server 3 s after the command (Python and torch
imports; the shipped model loads in 0.04 s). Gradio 6.31 would add 46 packages, 57 MB of wheels on
top of tinydiff's own (``pip download gradio``, measured here), for the same four forms. The page
calls four JSON endpoints, each a thin wrapper over the library:

    POST /api/sample      class (or prompt), guidance, sampler, steps, eta, seed, n  -> a grid
    POST /api/trajectory  the same, n <= 8                               -> x_t and predicted x0 per step
    POST /api/forward     an image (drawn or a test digit), t            -> q(x_t | x_0), SNR and alpha_bar
    POST /api/latent      two images, steps, frames                      -> inversion, reconstruction error,
                                                                            slerp and linear paths, merges

Requests are served one at a time (:class:`Playground` holds a lock): on two cores two samplers at
once would each run at a crawl, so a request waits for the one before it, and every answer says
how long it waited and how long it computed. Every input is bounded (LIMITS); a bad request gets
HTTP 400 with one line. The server reads only its own page and the checkpoint it was given, writes
nothing, and listens on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import base64
import io
import json
import math
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch

from .errors import TinydiffError

PAGE = Path(__file__).with_name("serve.html")
SAMPLERS = ("ddim", "dpm++2m", "pndm", "heun", "ddpm")
LIMITS = {
    "n": 64, "steps": 200, "frames": 16, "trajectory_n": 8, "body_bytes": 512 * 1024, "guidance": 20.0, "prompt": 1000,
}  # fmt: skip


def png(images: torch.Tensor, nrow: int | None = None, scale: int = 4) -> str:
    """Images [N, C, H, W] in [-1, 1] as one PNG grid, a data: URL."""
    from PIL import Image

    from .viz import make_grid

    grid = make_grid(images, nrow)
    picture = Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


class Playground:
    """The computations behind the page, for one model, one request at a time."""

    def __init__(self, ckpt: str | None = None, device: str = "cpu"):
        from .model import load

        self.model = load(ckpt, device=device)
        self.name = ckpt or "pretrained:mnist"
        self.lock = threading.Lock()
        own = self.model.config.get("sampling") or {"sampler": "dpm++2m", "steps": 20}  # a distilled student's own
        self.defaults = {"sampler": own["sampler"], "steps": own["steps"]}
        self.samplers = tuple(dict.fromkeys([self.defaults["sampler"], *SAMPLERS]))

    def info(self) -> dict:
        return {
            "model": self.name,
            "image_shape": list(self.model.image_shape),
            "classes": self.model.num_classes or 0,
            "text": bool(self.model.text_encoder),
            "timesteps": self.model.schedule.num_timesteps,
            "samplers": self.samplers,
            "defaults": self.defaults,
            "limits": LIMITS,
        }

    def handle(self, action: str, request: dict) -> dict:
        """Run ``action`` on a request (a dict from JSON) after the requests before it; the answer
        carries waited_s and seconds (computing)."""
        method = {"sample": self.sample, "trajectory": self.trajectory, "forward": self.forward, "latent": self.latent}
        if action not in method:
            raise TinydiffError(f"unknown action {action!r}")
        arrived = time.perf_counter()
        with self.lock:
            started = time.perf_counter()
            with torch.inference_mode():
                answer = method[action](request)
        answer.update(waited_s=round(started - arrived, 3), seconds=round(time.perf_counter() - started, 3))
        return answer

    # -- the four pages ----------------------------------------------------------------------------
    def _sampling(self, request: dict, n_max: int) -> dict:
        n = _integer(request, "n", 16, 1, n_max)
        sampler = request.get("sampler", self.defaults["sampler"])
        if sampler not in self.samplers:
            raise TinydiffError(f"sampler must be one of {', '.join(self.samplers)}")
        options = {"eta": _number(request, "eta", 0.0, 0.0, 10.0)} if sampler in ("ddim", "dpm++2m") else {}
        if sampler == "ddim":
            options["eta"] = min(options["eta"], 1.0)
        labels = None
        if self.model.num_classes and request.get("class", "all") != "none":
            which = request.get("class", "all")
            labels = (
                torch.arange(n) % self.model.num_classes
                if which == "all"
                else torch.full((n,), _integer(request, "class", 0, 0, self.model.num_classes - 1))
            )
        prompts = self._prompts(request)
        conditional = labels is not None or prompts is not None
        guidance = _number(request, "guidance", 0.0, 0.0, LIMITS["guidance"]) if conditional else 0.0
        steps = _integer(request, "steps", self.defaults["steps"], 1, LIMITS["steps"])
        seed = _integer(request, "seed", 0, 0, 2**31 - 1)
        return dict(n=n, sampler=sampler, steps=steps, seed=seed, labels=labels, prompts=prompts, guidance=guidance,
                    **options)  # fmt: skip

    def _prompts(self, request: dict) -> list[str] | None:
        """A text-conditioned model's prompts: "nine | a hand-drawn 7" is two, the images take them in turn."""
        if "prompt" not in request:
            return None
        prompt = request["prompt"]
        if not self.model.text_encoder:
            raise TinydiffError("this model is not text-conditioned: it takes no prompt")
        if not isinstance(prompt, str) or len(prompt) > LIMITS["prompt"]:
            raise TinydiffError(f"prompt must be text of at most {LIMITS['prompt']} characters")
        return [part.strip() for part in prompt.split("|")]

    def sample(self, request: dict) -> dict:
        from .api import grid_columns, sample

        options = self._sampling(request, LIMITS["n"])
        with self.model.count_evaluations() as count:
            images = sample(self.model, options.pop("n"), **options)
        every_class = options["labels"] is not None and request.get("class") == "all"
        nrow = grid_columns(self.model, every_class, options["prompts"])
        return {"image": png(images, nrow), "nfe": count["images"] / len(images)}

    def trajectory(self, request: dict) -> dict:
        from .api import sample

        options = self._sampling(request, LIMITS["trajectory_n"])
        frames = []

        def record(i, t, x_t, x0):
            frames.append({"t": int(t), "image": png(torch.cat([x_t.clamp(-1, 1), x0.clamp(-1, 1)]), len(x_t))})

        sample(self.model, options.pop("n"), callback=record, **options)
        return {"frames": frames}

    def forward(self, request: dict) -> dict:
        """q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) at one t, with a fixed noise draw."""
        x0 = self._image(request.get("image")).float() / 127.5 - 1
        t = _integer(request, "t", 0, 0, self.model.schedule.num_timesteps - 1)
        alpha_bar = float(self.model.schedule.alpha_bar_at(t))
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(_integer(request, "seed", 0, 0, 2**31)))
        x_t = math.sqrt(alpha_bar) * x0 + math.sqrt(1 - alpha_bar) * noise  # DDPM eq. 4
        snr = alpha_bar / (1 - alpha_bar)
        return {"image": png(torch.cat([x0, x_t.clamp(-1, 1)]), 2), "t": t, "alpha_bar": alpha_bar, "snr": snr}

    def latent(self, request: dict) -> dict:
        """Invert two images, decode them back (with the error), and the slerp, linear and merge paths."""
        from .api import decode, invert
        from .experiments.latent import interpolate, merge

        a, b = self._image(request.get("a")), self._image(request.get("b", 1))
        steps = _integer(request, "steps", 50, 1, LIMITS["steps"])
        frames = _integer(request, "frames", 9, 2, LIMITS["frames"])
        pair = torch.cat([a, b])
        z = invert(self.model, pair, steps=steps)
        back = decode(self.model, z, steps=steps).cpu()
        error = float((back - (pair.float() / 127.5 - 1)).pow(2).mean())
        spherical, linear = interpolate(self.model, z[:1], z[1:], frames, steps)
        merged, pixel = merge(self.model, a, b, frames, steps)
        return {
            "reconstruction": png(torch.cat([pair.float() / 127.5 - 1, back]), 2),
            "mse": error,
            "interpolation": png(torch.cat([spherical, linear]), frames),
            "merge": png(torch.cat([merged, pixel]), frames),
            # one picture per mixing weight, for the page's slider: slerp | linear | merge | pixel mix
            "frames": [png(torch.stack([spherical[k], linear[k], merged[k], pixel[k]]), 4) for k in range(frames)],
        }

    def _image(self, given) -> torch.Tensor:
        """A uint8 [1, C, H, W] image: an index into the test split of the model's data, or a
        drawn picture as a PNG data: URL (resized to the model's size)."""
        from PIL import Image

        c, h, w = self.model.image_shape
        if isinstance(given, int) or given is None:
            from .data import load_dataset

            spec = self.model.config["data"]["spec"].split(":")[0]
            data = load_dataset(f"{spec}:test")
            index = given or 0
            if not 0 <= index < len(data):
                raise TinydiffError(f"image index must be in [0, {len(data) - 1}]")
            return data.images[index : index + 1]
        if not isinstance(given, str) or not given.startswith("data:image/png;base64,") or len(given) > 400_000:
            raise TinydiffError("an image must be a test-set index or a PNG data: URL under 300 KB")
        try:
            picture = Image.open(io.BytesIO(base64.b64decode(given.split(",", 1)[1], validate=True)))
            picture = picture.convert("L" if c == 1 else "RGB").resize((w, h), Image.LANCZOS)
        except Exception:  # noqa: BLE001 - any undecodable picture is one line for the user
            raise TinydiffError("the image is not a readable PNG") from None
        pixels = np.asarray(picture, dtype=np.uint8).reshape(h, w, c).transpose(2, 0, 1)
        return torch.from_numpy(pixels.copy())[None]


def _integer(request: dict, key: str, default: int, low: int, high: int) -> int:
    value = request.get(key, default)
    if type(value) is not int or not low <= value <= high:
        raise TinydiffError(f"{key} must be an integer in [{low}, {high}], got {value!r}")
    return value


def _number(request: dict, key: str, default: float, low: float, high: float) -> float:
    value = request.get(key, default)
    if type(value) not in (int, float) or not low <= value <= high:
        raise TinydiffError(f"{key} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def handler(playground: Playground) -> type[BaseHTTPRequestHandler]:
    """The HTTP layer: GET / (the page), GET /api/info, POST /api/ACTION with a JSON body."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # quiet: the page shows what happened
            pass

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, value: dict) -> None:
            self._send(status, json.dumps(value).encode(), "application/json")

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, PAGE.read_bytes(), "text/html; charset=utf-8")
            elif self.path == "/api/info":
                self._json(HTTPStatus.OK, playground.info())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}"})

        def do_POST(self):
            if not self.path.startswith("/api/"):
                return self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {self.path}"})
            try:
                size = int(self.headers.get("Content-Length", 0))
                if not 0 <= size <= LIMITS["body_bytes"]:
                    self.close_connection = True  # the unread body must not be taken for a next request
                    raise TinydiffError(f"a request body must be at most {LIMITS['body_bytes']} bytes")
                request = json.loads(self.rfile.read(size) or b"{}")
                if not isinstance(request, dict):
                    raise TinydiffError("a request must be a JSON object")
                self._json(HTTPStatus.OK, playground.handle(self.path.removeprefix("/api/"), request))
            except (TinydiffError, ValueError) as err:  # json.JSONDecodeError is a ValueError
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})

    return Handler


def serve(ckpt: str | None = None, host: str = "127.0.0.1", port: int = 7860, device: str = "cpu", ready=None):
    """Serve the playground until interrupted; ``ready(server)`` is called once it listens."""
    playground = Playground(ckpt, device)
    server = ThreadingHTTPServer((host, port), handler(playground))
    if ready is not None:
        ready(server)
    try:
        server.serve_forever()
    finally:
        server.server_close()
