"""Public conformance kit: checks any component (built-in or plugin) against varkit's contracts.

Import it from a plugin's tests: ``from varkit.testing import check_attention_kernel``.
"""

from varkit.testing.attention import AttentionReport, check_attention_kernel
from varkit.testing.quantizer import check_quantizer
from varkit.testing.schedules import check_cfg_schedule, check_scale_schedule
from varkit.testing.speedup import SpeedupReport, check_speedup

__all__ = [
    "AttentionReport",
    "SpeedupReport",
    "check_attention_kernel",
    "check_cfg_schedule",
    "check_quantizer",
    "check_scale_schedule",
    "check_speedup",
]
