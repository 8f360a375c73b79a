"""Advisors: the `scalable advise` arguments and seed 003's JSON shape.

`advise` (issue 17) is not on main yet: a fake `scalable` records its
arguments and prints the seed's JSON, so only the wrapper is tested here."""

import json
import os
import stat

import pytest

from scalable import LearnedAdvisor, ResourceAdvisor

SEED_003 = {
    "task": "run_demeter_scenario",
    "workers": {"demeter": 8},
    "resources": {"demeter": {"cpus": 16, "memory": "48G", "walltime": "03:15:00"}},
    "confidence": 0.87,
    "model_type": "gradient_boosting",
    "method": "learned",
    "evidence": {"runs_analyzed": 12},
}


@pytest.fixture
def fake_cli(tmp_path, monkeypatch):
    log = tmp_path / "argv.json"
    exe = tmp_path / "scalable"
    exe.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"json.dump(sys.argv[1:], open({str(log)!r}, 'w'))\n"
        f"print(json.dumps({SEED_003!r}))\n"
    )
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("SCALABLE_BIN_DIR", str(tmp_path))
    (tmp_path / "access.json").write_text("{}")
    return tmp_path, lambda: json.loads(log.read_text())


def test_learned_advisor_arguments_and_fields(fake_cli):
    state, argv = fake_cli
    advisor = LearnedAdvisor.from_history(str(state), model_type="gradient_boosting")
    rec = advisor.recommend(task="run_demeter_scenario", target="hpc",
                            features={"num_scenarios": 50, "input_size_mb": 2048})
    assert argv() == ["advise", "--task", "run_demeter_scenario", "--target", "hpc",
                      "--model-type", "gradient_boosting", "--features", "num_scenarios=50",
                      "--features", "input_size_mb=2048", "--format", "json", "--json",
                      "--access", os.path.join(str(state), "access.json")]
    assert rec.workers == {"demeter": 8}
    assert rec.resources["demeter"]["memory"] == "48G"
    assert rec.confidence == pytest.approx(0.87)
    assert rec.evidence == {"runs_analyzed": 12}


def test_resource_advisor_has_no_model_type(fake_cli):
    state, argv = fake_cli
    rec = ResourceAdvisor.from_history(str(state / "access.json")).recommend(task="summarise")
    assert argv()[:4] == ["advise", "--task", "summarise", "--format"]
    assert rec.task == "run_demeter_scenario"


def test_unknown_model_type_is_refused():
    with pytest.raises(ValueError, match="random_forest"):
        LearnedAdvisor(model_type="svm")


def test_advisors_learn_from_the_client_runs(client, session):
    """Five runs of one function through the real broker: the percentile
    advisor sizes it from what the calls measured (the job is named after the
    function, so runs group); the learned one, without features to learn
    from, falls back to it and says so."""
    import tasks

    for _ in range(5):
        assert client.gather(client.map(tasks.grow, [8, 16, 32, 64], tag="demeter")) == [n << 20 for n in (8, 16, 32, 64)]
    rec = ResourceAdvisor.from_history(session).recommend(task="grow")
    assert rec.task == "grow"
    assert rec.evidence["runs_analyzed"] >= 5, rec.raw
    assert rec.evidence["attempts_analyzed"] >= 20, rec.raw
    learned = LearnedAdvisor.from_history(session, model_type="linear").recommend(task="grow")
    assert "fallback" in (learned.method or ""), learned.raw
    print(json.dumps(rec.raw))
