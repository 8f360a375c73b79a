"""Functions the tests run on agents (importable by reference, as a user's
module would be)."""

import os
import time


def run_demeter_scenario(scenario):
    return {"scenario": scenario, "cells": len(scenario) * 100, "pid": os.getpid()}


def aggregate(result):
    return f"{result['scenario']}:{result['cells']}"


def square(x):
    return x * x


def add(a, b):
    return a + b


def slow_add(a, b, delay=0.5):
    time.sleep(delay)
    return a + b


def explode(scenario):
    raise KeyError(f"no constraints for {scenario}")


def marked_sleep(marker_dir, seconds):
    """Records each attempt that starts, then sleeps."""
    attempt = os.environ.get("SCALABLE_ATTEMPT", "?")
    with open(os.path.join(marker_dir, f"start-{attempt}-{os.getpid()}"), "w") as f:
        f.write(attempt)
    time.sleep(seconds)
    return f"done after attempt {attempt}"


def grow(megabytes):
    """Holds `megabytes` MB for a moment: a peak the advisors can measure."""
    block = bytearray(megabytes * 1024 * 1024)
    time.sleep(0.3)
    return len(block)
