"""A runnable OpenAI-compatible mini router with llmtally analytics on both sides.

    UPSTREAM_API_KEY=sk-... LLMTALLY_KEY_SECRET=$(openssl rand -hex 32) \\
    python examples/mini_router.py --upstream https://api.openai.com/v1 --db analytics.db \\
        --port 8080 --keys alice=sk-router-alice,bob=sk-router-bob

Clients use it like the OpenAI API (``base_url=http://127.0.0.1:8080/v1``, ``api_key`` =
their router key). The router itself is ``llmtally.demo.router.create_router_app`` (the
one ``llmtally demo`` runs): ``LlmTallyMiddleware`` on the app records each client
request, ``LlmTallyTransport`` on the upstream httpx2 client each upstream LLM call.

``--keys`` maps labels to router keys (any bearer key is accepted without it). The HMAC
secret for key ids comes from ``LLMTALLY_KEY_SECRET`` (a random one per run otherwise, so
ids change across restarts). Prints ``mini_router listening on http://HOST:PORT`` once the
socket is bound (``--port 0`` picks a free port), and the totals on shutdown.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Sequence

import uvicorn

from llmtally import EventStore
from llmtally.demo.router import create_router_app, parse_keys


def print_totals(store: EventStore) -> None:
    stats = store.stats()
    print(
        f"mini_router: {stats.total_requests} requests ({stats.failed_requests} failed), "
        f"{stats.total_input_tokens} input and {stats.total_output_tokens} output tokens, "
        f"${stats.total_cost_micros / 1e6:.6f}",
        file=sys.stderr,
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="OpenAI-compatible base URL (…/v1)")
    parser.add_argument("--db", default="analytics.db", help="SQLite file (':memory:' = none)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    parser.add_argument("--keys", default="", help="label=key,... (default: accept any key)")
    parser.add_argument("--trusted-proxy", action="append", default=[], metavar="IP/CIDR")
    parser.add_argument("--anonymize-ip", action="store_true")
    args = parser.parse_args(argv)

    secret = os.environ.get("LLMTALLY_KEY_SECRET")
    app = create_router_app(
        args.upstream,
        EventStore(None if args.db == ":memory:" else args.db),
        keys=parse_keys(args.keys),
        upstream_key=os.environ.get("UPSTREAM_API_KEY"),
        key_secret=secret.encode() if secret else None,
        trusted_proxies=args.trusted_proxy,
        anonymize_ip=args.anonymize_ip,
        on_stopped=print_totals,
    )
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)  # requests wait in the backlog until uvicorn has started the app
    host, port = sock.getsockname()[:2]
    print(f"mini_router listening on http://{host}:{port}", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
