"""Fixtures: the repository's binaries, and a session on the seeds' Demeter
manifest (examples/demeter-mini, local target: two agents serving the
demeter and postprocess tags)."""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("SCALABLE_BIN_DIR", os.path.join(REPO, "target", "debug"))
MANIFEST = os.path.join(REPO, "examples", "demeter-mini", "scalable.yaml")

from scalable import ScalableSession  # noqa: E402


def bin_path(name):
    return os.path.join(os.environ["SCALABLE_BIN_DIR"], name)


@pytest.fixture(scope="module")
def session():
    with ScalableSession.from_yaml(MANIFEST, target="local") as s:
        yield s


@pytest.fixture(scope="module")
def client(session):
    return session.start()
