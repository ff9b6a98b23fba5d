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
from .analysis.budgets import Budget, BudgetStatus
from .analysis.errors import ErrorPattern, ErrorPatternsSnapshot
from .analysis.slo import SloStatus
from .analysis.stats import ComputedStats, ModelStats, Quantiles
from .analysis.streaming import StreamingModelStats, StreamingSnapshot
from .budgeting import BudgetReservation
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
from .streams import StreamTracker

__all__ = [
    "AnalyticsEvent",
    "Budget",
    "BudgetExceeded",
    "BudgetReservation",
    "BudgetStatus",
    "BudgetThresholdReached",
    "ComputedStats",
    "ConfigurationError",
    "ErrorPattern",
    "ErrorPatternsSnapshot",
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
    "SloStatus",
    "StoreClosedError",
    "StreamTracker",
    "StreamingModelStats",
    "StreamingSnapshot",
    "SyncConfig",
    "SyncHooks",
    "SyncResult",
    "ValidationError",
    "infer_provider",
]

__version__ = "0.1.0"
