"""Send what llmtally records to other observability systems.

- ``llmtally.exporters.otel.OtelExporter``: an actor that follows a store's live events
  and records the OpenTelemetry GenAI semantic-convention metrics (and, optionally, one
  span per request) through the OpenTelemetry API. Needs the ``otel`` extra.
- ``llmtally.exporters.genai``: the pure mapping it uses, event → GenAI measurements and
  attributes (no OpenTelemetry import).

Import the submodule you need; this package imports nothing.
"""
