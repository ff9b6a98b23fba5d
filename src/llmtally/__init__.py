"""llmtally: analytics for LLM routers and proxies.

``async with EventStore(path) as store: await store.record_llm_completed(...)``.
"""

from __future__ import annotations

from ._config import SyncConfig
from ._exceptions import (
    BudgetExceeded,
    ConfigurationError,
    LlmTallyError,
    StoreClosedError,
    ValidationError,
)
from .analysis.stats import ComputedStats, ModelStats, Quantiles
from .events import (
    AnalyticsEvent,
    BudgetThresholdReached,
    LlmRequestCompleted,
    LlmRequestFailed,
    RouterStarted,
    RouterStopped,
)
from .pipeline.sync import SyncHooks, SyncResult
from .pricing import ModelPricing, PricingManager
from .providers import Provider, infer_provider
from .store import EventStore

__all__ = [
    "AnalyticsEvent",
    "BudgetExceeded",
    "BudgetThresholdReached",
    "ComputedStats",
    "ConfigurationError",
    "EventStore",
    "LlmRequestCompleted",
    "LlmRequestFailed",
    "LlmTallyError",
    "ModelPricing",
    "ModelStats",
    "PricingManager",
    "Provider",
    "Quantiles",
    "RouterStarted",
    "RouterStopped",
    "StoreClosedError",
    "SyncConfig",
    "SyncHooks",
    "SyncResult",
    "ValidationError",
    "infer_provider",
]

__version__ = "0.1.0"
