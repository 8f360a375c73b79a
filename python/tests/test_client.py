"""The Python client against a real broker with the manifest's local agents."""

import json
import os
import subprocess
import time

import pytest
from conftest import bin_path

import tasks
from scalable import CommandResult, RemoteTraceback, TaskCancelled, TaskFailed, as_completed


def status(session, run):
    out = subprocess.run([bin_path("scalable"), "status", str(run), "--json", "--access", session.access],
                         capture_output=True, check=True, text=True).stdout
    return json.loads(out)[0]


def test_seed_002_heterogeneous_pool(session, client):
    scenarios = ["ssp1_0p5", "ssp2_0p5", "ssp3_0p5"]
    sims = [client.submit(tasks.run_demeter_scenario, s, tag="demeter") for s in scenarios]
    results = client.gather(sims, timeout=60)
    assert [r["scenario"] for r in results] == scenarios
    finals = [client.submit(tasks.aggregate, r, tag="postprocess", cpus=1, memory="64M") for r in results]
    assert client.gather(finals, timeout=60) == ["ssp1_0p5:800", "ssp2_0p5:800", "ssp3_0p5:800"]
    tags = {j["tag"] for f in sims + finals for j in status(session, f.run)["jobs"]}
    assert tags == {"demeter", "postprocess"}


def test_exception_and_remote_traceback_reach_gather(client):
    good = client.submit(tasks.square, 4, tag="demeter")
    bad = client.submit(tasks.explode, "ssp9", tag="demeter")
    with pytest.raises(KeyError, match="no constraints for ssp9") as info:
        client.gather([good, bad], timeout=60)
    assert "in explode" in info.value.remote_traceback
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert good.result() == 16
    assert client.gather([good, bad], errors="skip") == [16]


def test_futures_as_dependencies(session, client):
    with client.batch():  # one run: b and c wait through the workflow's `after`
        a = client.submit(tasks.slow_add, 1, 1, tag="demeter")
        b = client.submit(tasks.add, a, 10, tag="postprocess")
        c = client.submit(tasks.add, {"x": [b]}["x"][0], 100, tag="demeter")
    assert c.result(60) == 112
    assert a.run == b.run == c.run
    wf = workflow_of(client, a)
    after = {j["name"]: j.get("after") for j in wf["jobs"]}
    assert after[b.name] == [a.name] and after[c.name] == [b.name]
    client.flush()
    d = client.submit(tasks.add, c, 1000, tag="demeter")  # c ran in an earlier run: held here
    assert d.result(60) == 1112
    failing = client.submit(tasks.explode, "x", tag="demeter")
    dependent = client.submit(tasks.add, failing, 1, tag="demeter")
    with pytest.raises(TaskCancelled):
        dependent.result(60)


def workflow_of(client, future):
    """The workflow the client submitted for the run holding `future`."""
    for name in os.listdir(client.rundir):
        if name.startswith("run-") and name.endswith(".yaml"):
            with open(os.path.join(client.rundir, name)) as f:
                wf = json.load(f)
            if any(j["name"] == future.name for j in wf["jobs"]):
                return wf
    raise AssertionError(f"no workflow file holds {future.name}")


def test_map_of_1000_is_one_job(session, client):
    futures = client.map(tasks.square, range(1000), tag="demeter")
    assert len({f.run for f in futures}) == 1
    assert client.gather(futures, timeout=300) == [i * i for i in range(1000)]
    run = status(session, futures[0].run)
    assert len(run["jobs"]) == 1 and run["counts"]["succeeded"] == 1000


def test_command_task(client):
    ok = client.submit_command(["sh", "-c", "echo hello from $SCALABLE_TASK_ID"], tag="postprocess")
    res = ok.result(60)
    assert isinstance(res, CommandResult)
    assert res.stdout().startswith("hello from ")
    bad = client.submit_command(["sh", "-c", "echo oops >&2; exit 3"], tag="postprocess")
    with pytest.raises(TaskFailed, match="exit code 3") as info:
        bad.result(60)
    assert "oops" in str(info.value)


def test_as_completed_and_cancel(client):
    slow = client.submit(tasks.slow_add, 0, 0, delay=60, tag="demeter")
    quick = [client.submit(tasks.square, i, tag="postprocess") for i in range(3)]
    assert sorted(f.result() for f in as_completed(quick, timeout=60)) == [0, 1, 4]
    while slow.run is None:
        time.sleep(0.05)
    assert slow.cancel()
    assert slow.done() and slow.cancelled()
    with pytest.raises(TaskCancelled):
        slow.result(1)


def test_bad_input_is_a_value_error_with_the_cli_message(client):
    f = client.submit(tasks.square, 2, tag="demeter", memory="lots")
    with pytest.raises(ValueError) as info:
        f.result(30)
    assert info.value.exit_code == 2 and "lots" in info.value.message


def test_warm_and_cold_calls_agree(session, client):
    """The default runs calls in the agent's warm interpreter (a fork of its
    zygote); `warm=False` one interpreter per call: same values, same
    exceptions, and the command says which."""
    from scalable import Client

    cold = Client(session.access, warm=False)
    try:
        futures = {c: c.map(tasks.square, range(5), tag="demeter") for c in (client, cold)}
        for c, fs in futures.items():
            assert c.gather(fs, timeout=60) == [0, 1, 4, 9, 16]
        commands = {c.warm: workflow_of(c, fs[0])["jobs"][0]["command"] for c, fs in futures.items()}
        assert commands[True][:3] == ["@scalable-agent", "warm-exec", "--"]
        assert commands[False][1:3] == ["-m", "scalable._worker"]
        with pytest.raises(KeyError, match="no constraints for cold"):
            cold.submit(tasks.explode, "cold", tag="demeter").result(60)
    finally:
        cold.close()
