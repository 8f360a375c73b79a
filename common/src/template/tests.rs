//! Tests of task templates: rendering, checks, and the budget of every render.

use super::*;
use crate::workflow::quick_job;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn job_templates_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<JobTemplates>();
}

#[test]
fn literal_strings_are_not_rendered() {
    let job = quick_job(
        "a",
        strings(&["echo", "{ not a template }", "}}"]),
        Items::One,
    );
    let t = JobTemplates::compile(&job).unwrap();
    assert_eq!(
        t.argv(&job, 0, 7).unwrap(),
        strings(&["echo", "{ not a template }", "}}"])
    );
    assert!(t.argv(&job, 1, 7).unwrap_err().contains("out of range"));
}

#[test]
fn range_items_are_integers() {
    let job = quick_job(
        "r",
        strings(&["run", "{{ item + 1 }}", "{{ index }}-{{ run_id }}"]),
        Items::Range { start: 10, end: 20 },
    );
    let t = JobTemplates::compile(&job).unwrap();
    assert_eq!(t.argv(&job, 0, 3).unwrap(), strings(&["run", "11", "0-3"]));
    assert_eq!(
        t.argv(&job, 10, 3).unwrap(),
        strings(&["run", "21", "10-3"])
    );
    assert!(t.argv(&job, 11, 3).is_err());
}

#[test]
fn list_items_keep_their_types() {
    let mut job = quick_job(
        "l",
        strings(&["{{ item }}"]),
        Items::List(vec![
            Item::Str("ssp1".into()),
            Item::Int(3),
            Item::Float(4.5),
            Item::Bool(true),
        ]),
    );
    job.env = vec![
        ("A".into(), "{{ item }}x".into()),
        ("B".into(), "plain".into()),
    ];
    job.features = vec![("size".into(), "{{ index * 2 }}".into())];
    job.workdir = Some("w/{{ item }}".into());
    job.inputs = vec!["in/{{ item }}.csv".into()];
    job.outputs = vec!["out/{{ item }}.nc\n".into()];
    let t = JobTemplates::compile(&job).unwrap();
    let all: Vec<String> = (0..4)
        .map(|i| t.argv(&job, i, 0).unwrap().remove(0))
        .collect();
    assert_eq!(all, strings(&["ssp1", "3", "4.5", "true"]));
    assert_eq!(
        t.env(&job, 1, 0).unwrap(),
        vec![
            ("A".to_string(), "3x".to_string()),
            ("B".to_string(), "plain".to_string())
        ]
    );
    assert_eq!(
        t.features(&job, 3, 0).unwrap(),
        vec![("size".to_string(), "6".to_string())]
    );
    assert_eq!(t.workdir(&job, 0, 0).unwrap().as_deref(), Some("w/ssp1"));
    assert_eq!(t.inputs(&job, 0, 0).unwrap(), strings(&["in/ssp1.csv"]));
    // The trailing newline is kept: the user wrote it.
    assert_eq!(t.outputs(&job, 0, 0).unwrap(), strings(&["out/ssp1.nc\n"]));
}

#[test]
fn render_errors_name_job_and_field() {
    let job = quick_job("j", strings(&["x", "{{ nope }}"]), Items::One);
    let t = JobTemplates::compile(&job).unwrap();
    let err = t.argv(&job, 0, 0).unwrap_err();
    assert!(
        err.starts_with("job \"j\" command[1]: undefined value"),
        "{err}"
    );

    let job = quick_job("j", strings(&["{{ item "]), Items::One);
    let err = JobTemplates::compile(&job).unwrap_err();
    assert!(
        err.starts_with("job \"j\" command[0]: bad template: syntax error"),
        "{err}"
    );
}

#[test]
fn hostile_items_do_not_panic() {
    // A JobDef from the network need not have been validated.
    let jobs = [
        Items::Range {
            start: i64::MIN,
            end: i64::MAX,
        },
        Items::Range { start: 5, end: 1 },
        Items::Range {
            start: i64::MAX - 1,
            end: i64::MAX,
        },
        Items::List(vec![]),
    ];
    for items in jobs {
        let job = quick_job("h", strings(&["{{ item }}"]), items);
        let t = JobTemplates::compile(&job).unwrap();
        for index in [0, 1, u64::MAX] {
            let _ = t.argv(&job, index, u64::MAX);
        }
        let _ = check_job_templates(&job, true);
    }
    let job = quick_job(
        "h",
        strings(&["{{ item }}"]),
        Items::Range {
            start: i64::MAX - 1,
            end: i64::MAX,
        },
    );
    let t = JobTemplates::compile(&job).unwrap();
    assert_eq!(t.argv(&job, 1, 0).unwrap(), vec![i64::MAX.to_string()]);
}

#[test]
fn many_renders_stay_correct() {
    // Not a timed benchmark: 100k renders of a 3-element templated argv, the
    // broker's hot path, must all succeed and stay correct.
    let job = quick_job(
        "bench",
        strings(&["python", "sim.py", "--seed={{ item }}"]),
        Items::Range {
            start: 1,
            end: 100_000,
        },
    );
    let t = std::sync::Arc::new(JobTemplates::compile(&job).unwrap());
    let mut last = Vec::new();
    for index in 0..100_000 {
        last = t.argv(&job, index, 42).unwrap();
        if index == 4_999 {
            assert_eq!(last, strings(&["python", "sim.py", "--seed=5000"]));
        }
    }
    assert_eq!(last, strings(&["python", "sim.py", "--seed=100000"]));
}

#[test]
fn checks_report_names_and_item_use() {
    let job = quick_job("one", strings(&["{{ item }}", "{{ index }}"]), Items::One);
    let issues = check_job_templates(&job, true);
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].field, "command[0]");
    assert_eq!(
        issues[0].message,
        "job \"one\" has no foreach or range, so {{ item }} is undefined"
    );

    let job = quick_job(
        "ok",
        strings(&[
            "{% for x in range(3) %}{{ x }}{{ loop.index }}{% endfor %}",
            "{% set y = item %}{{ y }}",
            "{{ item | upper }}",
        ]),
        Items::List(vec![Item::Str("a".into())]),
    );
    assert_eq!(check_job_templates(&job, true), vec![]);

    let job = quick_job("u", strings(&["{{ undefined_var }}"]), Items::One);
    let issues = check_job_templates(&job, true);
    assert_eq!(
        issues[0].message,
        "bad template in job \"u\": undefined variable \"undefined_var\" \
         (templates know item, index and run_id)"
    );

    // Fails only for the last item: 10 / (item - 5) with item 5.
    let job = quick_job(
        "last",
        strings(&["{{ 10 // (item - 5) }}"]),
        Items::Range { start: 1, end: 5 },
    );
    let issues = check_job_templates(&job, true);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(
        issues[0].message.ends_with("for task 4 (item 5)"),
        "{issues:?}"
    );
}

/// Regression (issue 12, defect 2): templates whose cost multiplies
/// (nested loops, string repetition, joins, macro recursion) rendered
/// unbounded on the broker's core task; each now fails within its budget.
#[test]
fn hostile_templates_fail_within_their_budget() {
    let shapes = [
        "{% for a in range(1000) %}{% for b in range(1000) %}{{ b }}{% endfor %}{% endfor %}",
        "{% for a in range(300) %}{% for b in range(300) %}{% for c in range(3) %}\
         {% endfor %}{% endfor %}{% endfor %}",
        "{{ 'x' * 2000000 }}",
        "{{ 'abc' * (item * 1000000) }}",
        "{{ range(100000) | join('xxxxxxxxxx') }}",
        "{% for a in range(100) %}{{ range(100000) | join(',') }}{% endfor %}",
        "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}\
         {{ f(16) }}",
        "{% macro g(n) %}{{ n }}{{ g(n) }}{% endmacro %}{{ g(1) }}",
    ];
    for shape in shapes {
        let job = quick_job(
            "h",
            strings(&["run", shape]),
            Items::Range { start: 1, end: 3 },
        );
        let t = JobTemplates::compile(&job).unwrap();
        let started = std::time::Instant::now();
        let err = t.argv(&job, 1, 0).unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{shape}: {:?}",
            started.elapsed()
        );
        assert!(err.starts_with("job \"h\" command[1]: "), "{shape}: {err}");
        let issues = check_job_templates(&job, true);
        assert_eq!(issues.len(), 1, "{shape}: {issues:?}");
        assert!(
            issues[0].message.ends_with("for task 0 (item 1)"),
            "{shape}: {issues:?}"
        );
    }
}

#[test]
fn budget_errors_say_which_budget_and_how_to_fix() {
    let job = quick_job(
        "loops",
        strings(&["{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}"]),
        Items::One,
    );
    let issues = check_job_templates(&job, true);
    assert_eq!(
        issues[0].message,
        format!(
            "bad template in job \"loops\": template exceeds its budget of \
             {TEMPLATE_FUEL_MAX} steps for task 0"
        )
    );
    assert_eq!(issues[0].hint.as_deref(), Some(TEMPLATE_BUDGET_HINT));

    let job = quick_job("big", strings(&["{{ 'x' * 2000000 }}"]), Items::One);
    let issues = check_job_templates(&job, true);
    assert_eq!(
        issues[0].message,
        format!(
            "bad template in job \"big\": template output exceeds \
             {TEMPLATE_OUTPUT_BYTES_MAX} bytes for task 0"
        )
    );
    assert_eq!(issues[0].hint.as_deref(), Some(TEMPLATE_BUDGET_HINT));

    // Other errors keep their text and get no budget hint.
    let job = quick_job("div", strings(&["{{ 1 // 0 }}"]), Items::One);
    let issues = check_job_templates(&job, true);
    assert_eq!(issues[0].hint, None, "{issues:?}");
}

#[test]
fn templates_within_budget_still_render() {
    let job = quick_job(
        "fine",
        strings(&[
            "{% for x in range(1000) %}{{ x }},{% endfor %}",
            "{{ 'x' * 100000 }}",
            "{{ range(10000) | join(',') }}",
        ]),
        Items::One,
    );
    let t = JobTemplates::compile(&job).unwrap();
    let argv = t.argv(&job, 0, 0).unwrap();
    assert!(argv[0].starts_with("0,1,2,") && argv[0].ends_with("999,"));
    assert_eq!(argv[1].len(), 100_000);
    assert!(argv[2].ends_with(",9999"));
    assert_eq!(check_job_templates(&job, true), vec![]);
}

/// Many templated strings each within budget share one budget per list of a
/// task, so a job cannot multiply its budget by its number of arguments.
#[test]
fn the_strings_of_one_list_share_one_budget() {
    let lp = "{% for x in range(3000) %}{% endfor %}";
    let job = quick_job("one", strings(&[lp]), Items::One);
    let t = JobTemplates::compile(&job).unwrap();
    assert!(t.argv(&job, 0, 0).is_ok());
    assert_eq!(check_job_templates(&job, true), vec![]);

    let job = quick_job("many", vec![lp.to_string(); 40], Items::One);
    let t = JobTemplates::compile(&job).unwrap();
    let err = t.argv(&job, 0, 0).unwrap_err();
    assert!(err.contains("template exceeds its budget of"), "{err}");
    let issues = check_job_templates(&job, true);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].message.ends_with("for task 0"), "{issues:?}");
    assert_eq!(issues[0].hint.as_deref(), Some(TEMPLATE_BUDGET_HINT));

    let mut job = quick_job("bytes", strings(&["x"]), Items::One);
    job.env = (0..3)
        .map(|i| (format!("E{i}"), "{{ 'x' * 400000 }}".to_string()))
        .collect();
    let t = JobTemplates::compile(&job).unwrap();
    let err = t.env(&job, 0, 0).unwrap_err();
    assert_eq!(
        err,
        format!("job \"bytes\" env.E2: template output exceeds {TEMPLATE_OUTPUT_BYTES_MAX} bytes")
    );
    let issues = check_job_templates(&job, true);
    assert_eq!(issues[0].field, "env.E2", "{issues:?}");
}

/// `join` over a huge lazy sequence is one instruction: fuel cannot see it,
/// so `join` itself stops at the output budget (it ran for seconds per call).
#[test]
fn join_is_bounded_and_still_joins() {
    let job = quick_job(
        "j",
        strings(&[
            "{{ range(4) | join(',') }}",
            "{{ 'abc' | join('-') }}",
            "{{ [1, 'x', true] | join }}",
        ]),
        Items::One,
    );
    let t = JobTemplates::compile(&job).unwrap();
    assert_eq!(
        t.argv(&job, 0, 0).unwrap(),
        strings(&["0,1,2,3", "a-b-c", "1xtrue"])
    );
    for shape in [
        "{% for i in range(50) %}{% set s = (range(100000) * 1000) | join(',') %}{% endfor %}x",
        "{% set s = ([''] * 100000000) | join %}x",
    ] {
        let job = quick_job("j", strings(&[shape]), Items::One);
        let t = JobTemplates::compile(&job).unwrap();
        let started = std::time::Instant::now();
        let err = t.argv(&job, 0, 0).unwrap_err();
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{shape}: {:?}",
            started.elapsed()
        );
        assert!(
            err.ends_with(&format!(
                "join result exceeds {TEMPLATE_OUTPUT_BYTES_MAX} bytes"
            )),
            "{shape}: {err}"
        );
    }
}
