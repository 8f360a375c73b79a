"""Read-only history: runs, telemetry rows and reports of the client's own runs."""

import tasks
from scalable import History


def test_runs_telemetry_and_report(client, session, tmp_path):
    f = client.submit(tasks.square, 7, tag="demeter")
    assert f.result(60) == 49
    assert f.name == "square", "a call's job is named after its function"
    h = client.history
    run = next(r for r in h.runs() if r["run"] == f.run)
    assert run["state"] == "succeeded"
    rows = History.of(session).telemetry(f.run)
    attempt = rows["attempt"][0]
    assert (attempt["job_name"], attempt["end_class"], attempt["tag"]) == ("square", "SUCCESS", "demeter")
    assert attempt["run_time_ms"] >= 0
    report = h.report(f.run)
    assert report["run"]["state"] == "succeeded", report["run"]
    page = h.report(f.run, format="html", output=str(tmp_path / "report.html"))
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    assert (tmp_path / "report.html").read_text() == page
    assert "Summary" in h.report(f.run, format="text")


def test_repeated_calls_in_one_batch_get_numbered_names(client):
    with client.batch():
        fs = [client.submit(tasks.square, i, tag="demeter") for i in range(3)]
    assert client.gather(fs, timeout=60) == [0, 1, 4]
    assert [f.name for f in fs] == ["square", "square-2", "square-3"]
