//! `scalable render` says which `scalable-agent` a pilot runs and where it
//! comes from (issue 14), on stderr: stdout stays exactly what is submitted.

use std::process::{Command, Output};

use crate::support::*;

fn render(target: &str, env: &[(&str, &str)]) -> Output {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = root.join("examples/demeter/scalable.yaml");
    let mut cmd = Command::new(cli_exe());
    cmd.args(["render", manifest.to_str().unwrap(), "--target", target])
        .args(["--tag", "demeter"])
        .env_remove("SCALABLE_ACCESS")
        .env_remove("SCALABLE_AGENT_EXE")
        .env_remove("SCALABLE_AGENT_URL")
        .current_dir(std::env::temp_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("render runs");
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

#[test]
fn render_names_the_agent_a_pilot_runs_and_where_it_comes_from() {
    let same_install = cli_exe().with_file_name("scalable-agent");
    let out = render("hpc", &[]);
    let shown = same_install.display().to_string();
    assert!(
        stdout(&out).contains(&format!(" {shown} \\\n")),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains(&format!(
            "note: pilots run {shown} (next to this executable: the same install, scalable "
        )),
        "{}",
        stderr(&out)
    );
    let out = render(
        "hpc",
        &[("SCALABLE_AGENT_EXE", "/shared/scalable/bin/scalable-agent")],
    );
    assert!(stdout(&out).contains(" /shared/scalable/bin/scalable-agent \\\n"));
    assert!(
        stderr(&out).contains("note: pilots run /shared/scalable/bin/scalable-agent ($SCALABLE_AGENT_EXE; the dist tarball's agent (scripts/dist.sh) runs on glibc 2.17 and newer)"),
        "{}",
        stderr(&out)
    );
    // Fargate: the agent inside the target's image.
    let out = render("aws", &[]);
    assert!(
        stderr(&out).contains("note: pilots run /usr/local/bin/scalable-agent inside the image "),
        "{}",
        stderr(&out)
    );
}
