"""Sessions: plans, brokers started by the CLI, a killed agent, an unreachable broker."""

import glob
import json
import subprocess
import time

import pytest
from conftest import bin_path

import tasks
from scalable import BrokerUnreachable, Client, InvalidInput, ScalableError, ScalableSession


def test_plan_is_the_cli_dry_run(session):
    plan = session.plan(dry_run=True)
    assert plan.scale_plan == {"demeter,postprocess": 2}



def test_objective_plans_and_bad_names(session):
    """The objective planner through the session (with its broker, so with
    the broker's history): every objective and policy gives workers per
    group, a makespan and its alternatives; `manual` is the manifest's counts."""
    seen = {}
    for objective in ("minimize cost", "minimize time", "balance"):
        for policy in ("safe", "aggressive", "manual"):
            plan = session.plan(objective=objective, policy=policy)
            assert (plan.objective, plan.policy) == (objective, policy)
            assert plan.rows and all(g["workers"] >= 1 and g["alternatives"] for g in plan.rows)
            assert plan.predicted_makespan_seconds and plan.predicted_makespan_seconds > 0
            seen[(objective, policy)] = plan.scale_plan
    assert seen[("minimize time", "manual")] == {"demeter,postprocess": 2}
    with pytest.raises(InvalidInput, match="minimize cost"):
        session.plan(objective="cheapest")
    with pytest.raises(InvalidInput, match="aggressive"):
        session.plan(policy="yolo")
    with pytest.raises(ScalableError, match="not applied"):
        session.plan(objective="balance", dry_run=False)


def test_session_attached_to_a_broker_started_by_the_cli(tmp_path):
    state = tmp_path / "state"
    broker = subprocess.Popen([bin_path("scalable-broker"), "--state-dir", str(state), "--listen",
                               "127.0.0.1:0", "--local-agents", "1"], stderr=subprocess.DEVNULL)
    try:
        access = state / "access.json"
        for _ in range(200):
            if access.exists():
                break
            time.sleep(0.05)
        with ScalableSession.attach(str(access)) as s:
            client = s.start()
            assert client.submit(tasks.add, 2, 3).result(60) == 5
            assert client.gather(client.map(tasks.square, [1, 2, 3]), timeout=60) == [1, 4, 9]
    finally:
        broker.terminate()
        broker.wait(15)


@pytest.mark.filterwarnings("ignore::scalable.ScalableWarning")
def test_unreachable_broker_raises_connection_error_in_time(tmp_path):
    state = tmp_path / "gone"
    broker = subprocess.Popen([bin_path("scalable-broker"), "--state-dir", str(state), "--listen",
                               "127.0.0.1:0"], stderr=subprocess.DEVNULL)
    access = state / "access.json"
    for _ in range(200):
        if access.exists():
            break
        time.sleep(0.05)
    broker.kill()
    broker.wait()
    start = time.monotonic()
    client = Client(str(access), timeout=5)
    future = client.submit(tasks.square, 3)
    with pytest.raises(ConnectionError) as info:
        future.result(30)
    assert isinstance(info.value, BrokerUnreachable) and info.value.exit_code == 3
    assert time.monotonic() - start < 20
    client.close()


def start_broker(state, *flags):
    broker = subprocess.Popen([bin_path("scalable-broker"), "--state-dir", str(state), "--listen",
                               "127.0.0.1:0", *flags], stderr=subprocess.DEVNULL)
    for _ in range(200):
        if (state / "access.json").exists():
            break
        time.sleep(0.05)
    return broker


def test_killed_agent_the_future_completes_once(tmp_path):
    # Agents started apart from the broker, as on a cluster: a broker's own
    # local agents are part of it (one exiting stops the broker).
    state = tmp_path / "state"
    broker = start_broker(state, "--heartbeat-timeout", "3", "--heartbeat-interval-ms", "500")
    agent = [bin_path("scalable-agent"), "--token-file", str(state / "agent.token"), "--tags", "demeter", "--cpus", "1"]
    agents = [subprocess.Popen(agent + ["--name", f"a{i}"], stderr=subprocess.DEVNULL) for i in range(2)]
    try:
        with ScalableSession.attach(str(state / "access.json")) as s:
            client = s.start()
            markers = tmp_path / "markers"
            markers.mkdir()
            future = client.submit(tasks.marked_sleep, str(markers), 4, tag="demeter")
            settled = []
            future.add_done_callback(settled.append)
            while not list(markers.iterdir()):
                time.sleep(0.05)
            listed = json.loads(subprocess.run([bin_path("scalable"), "agents", "--json", "--access", s.access],
                                               capture_output=True, check=True, text=True).stdout)
            busy = [a["name"] for a in listed if a["running"]]
            assert len(busy) == 1
            agents[int(busy[0][1:])].kill()
            assert future.result(90).startswith("done after attempt")
            time.sleep(1)  # a late report would settle it a second time here
            assert settled == [future]
            assert len(glob.glob(str(markers / "start-*"))) >= 2
    finally:
        for p in agents + [broker]:
            p.terminate()
            p.wait(15)


@pytest.mark.filterwarnings("ignore::scalable.ScalableWarning")
def test_broker_gone_mid_run_raises_connection_error(tmp_path):
    state = tmp_path / "state"
    broker = start_broker(state)  # no agent: the task waits, ready, when the broker dies
    client = Client(str(state / "access.json"), timeout=3)
    future = client.submit(tasks.slow_add, 1, 2, delay=30)
    while future.run is None:
        time.sleep(0.05)
    broker.kill()
    broker.wait()
    start = time.monotonic()
    with pytest.raises(ConnectionError):
        future.result(60)
    assert time.monotonic() - start < 30
    client.close()
