"""Hypothesis profiles and shared helpers of the reliability suite.

``OUTPROFILE_HYPOTHESIS_PROFILE`` picks the profile loaded for every hypothesis test
(``default``: quick, a few seconds; ``slow``: >= 1,000 sequences). The heavy variants
(marked ``slow``) always use the ``slow`` profile, whatever the variable says.

Example:
    ```bash
    python -m pytest tests/reliability -q                       # quick
    python -m pytest tests/reliability -q -m slow               # the heavy variants
    OUTPROFILE_HYPOTHESIS_PROFILE=slow python -m pytest tests/reliability -q
    ```
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings

PROFILE_ENV = "OUTPROFILE_HYPOTHESIS_PROFILE"

_COMMON: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
settings.register_profile("default", max_examples=10, stateful_step_count=20, **_COMMON)
settings.register_profile("slow", max_examples=1_000, stateful_step_count=30, **_COMMON)
settings.load_profile(os.environ.get(PROFILE_ENV, "default"))
