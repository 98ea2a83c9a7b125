"""``tinydiff serve``: the playground in the browser (serve.py)."""

from __future__ import annotations

import sys

from . import device_option, integer


def add_parser(sub, common) -> None:
    p = sub.add_parser("serve", parents=[common], help="an interactive playground in the browser")
    p.add_argument("--ckpt", default=None, help="a run or checkpoint directory (default: pretrained:mnist)")
    p.add_argument("--port", type=integer(0, 65535), default=7860, help="0: any free port")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every network)")
    device_option(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..serve import serve

    def ready(server):
        host, port = server.server_address[:2]
        print(f"tinydiff playground on http://{host}:{port}/ (Ctrl-C stops it)", file=sys.stderr, flush=True)

    try:
        serve(args.ckpt, args.host, args.port, args.device, ready=ready)
    except KeyboardInterrupt:
        pass
