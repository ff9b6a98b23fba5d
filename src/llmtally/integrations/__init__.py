"""Record LLM traffic without touching the code that makes it.

- ``llmtally.integrations.httpx.LlmTallyTransport``: an ``httpx2`` transport for the
  ``openai``/``anthropic`` SDKs (or any httpx2 client) — one event per upstream LLM call,
  with usage, cost, TTFT and inter-token latency read from JSON and SSE bodies as they
  pass, unchanged.
- ``llmtally.integrations.asgi.LlmTallyMiddleware``: pure ASGI middleware for a router —
  routiium-style request metadata (endpoint, model, sizes, status, latency, client IP,
  hashed API key, routing) and an event per request not already recorded upstream.

Both share the request's attribution through a context variable: a router using both
records each upstream call once, attributed to the client's key. Neither can fail the
request it watches: analytics errors are counted (``.counters``) and logged at a bounded
rate. Import the submodule you need; this package imports nothing (the middleware needs no
framework, the transport needs only httpx2).
"""
