"""The documented example runs as written (python/examples/quickstart.py),
here with the stdlib pickler: functions of the caller's script reach tasks
by re-running the script as `__mp_main__`."""

import os
import pickle
import subprocess
import sys

from conftest import MANIFEST, REPO


def test_quickstart_runs_with_plain_pickle():
    env = dict(os.environ, SCALABLE_PICKLE="pickle",
               PYTHONPATH=os.pathsep.join([os.path.join(REPO, "python"), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, os.path.join(REPO, "python", "examples", "quickstart.py"), MANIFEST],
                         capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "plan: {'demeter,postprocess': 2}"
    assert "ssp3_0p5: 1030 cells" in lines
    assert "sum of squares: 328350" in lines
    assert lines[-2:] == ["failed as expected: unknown scenario ssp9_0p5", "ValueError: unknown scenario ssp9_0p5"]


def test_lambdas_need_cloudpickle(client):
    try:
        import cloudpickle  # noqa: F401
    except ImportError:
        try:
            client.submit(lambda x: x + 1, 1, tag="demeter")
        except (pickle.PicklingError, AttributeError) as err:
            assert "lambda" in str(err)
            return
        raise AssertionError("a lambda was accepted without cloudpickle")
    assert client.submit(lambda x: x + 1, 1, tag="demeter").result(60) == 2
