"""``check_event``'s fast path (``_plainly_valid``) accepts only what its field-by-field
checks accept: a hostile value in any field sends the event down the slow path."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtally import AnalyticsEvent, LlmRequestCompleted, ValidationError
from llmtally._ids import new_event_id
from llmtally._validation import _plainly_valid, check_fields

from . import profiles
from .values import prebuilt_events, weird

environments = st.one_of(
    st.none(), st.sampled_from(["production", "eu/west-1", "", "x" * 65, "prod\n"]), weird
)


@profiles.calls(500)
@given(prebuilt_events(), environments, st.booleans())
def test_the_fast_path_accepts_only_what_the_full_checks_accept(
    item: tuple[Any, bool], environment: Any, with_environment: bool
) -> None:
    event, _ = item
    if type(event) is not AnalyticsEvent:
        return
    if with_environment:
        event = msgspec.structs.replace(event, environment=environment)
    if _plainly_valid(event):
        check_fields(event)  # must not raise


def test_a_typical_request_takes_the_fast_path_and_a_bad_one_does_not() -> None:
    ok = AnalyticsEvent(
        event_id=new_event_id(),
        timestamp_ms=1_700_000_000_000,
        payload=LlmRequestCompleted(
            model="gpt-4o-mini", provider="openai", input_tokens=5, duration_ms=12.5
        ),
        environment="production",
    )
    assert _plainly_valid(ok)
    bad = msgspec.structs.replace(ok, payload=msgspec.structs.replace(ok.payload, input_tokens=-1))
    assert not _plainly_valid(bad)
    with pytest.raises(ValidationError, match="input_tokens"):
        check_fields(bad)
