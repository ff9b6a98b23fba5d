"""Pure, synchronous domain logic: sketches, stats, and later streaming, errors, budgets.

Nothing here awaits or does I/O; the actors in ``llmtally.pipeline`` call into it.
"""
