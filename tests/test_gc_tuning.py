"""The collector settings a hosting process runs with (the why is in ``gc_tuning``)."""

from __future__ import annotations

import json
import subprocess
import sys

SHOW = """
import gc, json
from poolnet_desktop.gc_tuning import YOUNG_THRESHOLD, tune_for_serving
before = gc.get_threshold()
tune_for_serving()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "young": YOUNG_THRESHOLD}))
"""


def test_serving_raises_the_young_threshold_and_freezes_what_start_up_made() -> None:
    # A fresh interpreter: freezing the test process's own heap would outlive this test.
    shown = json.loads(subprocess.run([sys.executable, "-c", SHOW], capture_output=True, text=True,
                                      check=True, timeout=60).stdout)
    assert shown["after"] == [shown["young"], *shown["before"][1:]]
    assert shown["young"] > shown["before"][0]
    assert shown["frozen"] > 1000  # the modules, classes and functions imported so far
