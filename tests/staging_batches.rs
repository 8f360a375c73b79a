//! Many small files through a private agent (protocol 9's `GetBatch` and
//! `PutBatch`): hundreds of inputs and outputs of a few bytes to a few
//! kilobytes move many to a stream, mixed with a file too large for a batch,
//! and arrive byte for byte; files of equal content (one blob) are fine in
//! one batch; no temporary file is left in the broker's blob store. And a
//! large input, served from where it is before it is a blob (`direct`), is
//! stored in the blob store after a verified fetch.

use std::time::Duration;

use crate::support::staging::*;
use crate::support::*;

const FILES: usize = 600;

fn input(i: usize) -> Vec<u8> {
    match i {
        0 => (0..300_000u32).map(|k| (k % 251) as u8).collect(),
        i if i >= 500 => b"same\n".to_vec(),
        i => format!("input {i}\n").repeat(i % 50 + 1).into_bytes(),
    }
}

#[test]
fn hundreds_of_small_files_move_in_batches_byte_for_byte() {
    let mut b = Broker::start();
    let a = private_agent(&mut b, "a", &[]);
    b.wait_agents(1);
    std::fs::create_dir_all(b.work().join("in")).unwrap();
    for i in 0..FILES {
        std::fs::write(b.work().join(format!("in/{i}.txt")), input(i)).unwrap();
    }
    let list = |dir: &str| {
        (0..FILES)
            .map(|i| format!("{dir}/{i}.txt"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let flow = format!(
        r#"workflow: many
jobs:
  - name: copy
    inputs: [{}]
    outputs: [{}, {}]
    command: [sh, -c, "mkdir -p $SCALABLE_STAGE_DIR/out $SCALABLE_STAGE_DIR/same && for i in $(seq 0 {last}); do {{ cat in/$i.txt; echo done $i; }} > $SCALABLE_STAGE_DIR/out/$i.txt; echo same > $SCALABLE_STAGE_DIR/same/$i.txt; done"]
"#,
        list("in"),
        list("out"),
        list("same"),
        last = FILES - 1
    );
    let wf = b.write("many.yaml", &flow);
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_succeeded(&b, &run, Duration::from_secs(120));
    for i in 0..FILES {
        let mut want = input(i);
        want.extend_from_slice(format!("done {i}\n").as_bytes());
        let got = std::fs::read(b.work().join(format!("out/{i}.txt"))).unwrap();
        assert!(got == want, "out/{i}.txt differs");
        let same = std::fs::read(b.work().join(format!("same/{i}.txt"))).unwrap();
        assert_eq!(same, b"same\n");
    }
    let in_bytes: usize = (0..FILES).map(|i| input(i).len()).sum();
    let events = std::fs::read_to_string(a.join("events.log")).unwrap();
    let staged_in = events
        .lines()
        .find_map(|l| l.split_once("stage-in "))
        .map(|(_, rest)| rest.split(' ').nth(1).unwrap().to_string());
    assert_eq!(staged_in, Some(in_bytes.to_string()), "{events}");
    assert_no_leftovers(&b.work());
    let partial: Vec<_> = std::fs::read_dir(b.state().join("cache/partial"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(partial.is_empty(), "left in the blob store: {partial:?}");
}

#[test]
fn a_large_input_is_served_from_its_place_and_stored_once_fetched() {
    let mut b = Broker::start();
    let a = private_agent(&mut b, "a", &[]);
    b.wait_agents(1);
    let data: Vec<u8> = (0..6_000_000u32).map(|k| (k % 249) as u8).collect();
    std::fs::write(b.work().join("big.bin"), &data).unwrap();
    let sha = {
        let out = std::process::Command::new("sha256sum")
            .arg(b.work().join("big.bin"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()[..64].to_string()
    };
    let wf = b.write(
        "big.yaml",
        r#"workflow: big
jobs:
  - name: first
    inputs: [big.bin]
    outputs: [first.sum]
    command: [sh, -c, "sha256sum big.bin > $SCALABLE_STAGE_DIR/first.sum"]
  - name: second
    after: [first]
    inputs: [big.bin]
    outputs: [second.sum]
    command: [sh, -c, "sha256sum big.bin > $SCALABLE_STAGE_DIR/second.sum"]
"#,
    );
    let run = b.ok(&["submit", &wf]).trim().to_string();
    wait_succeeded(&b, &run, Duration::from_secs(90));
    for name in ["first.sum", "second.sum"] {
        let sum = std::fs::read_to_string(b.work().join(name)).unwrap();
        assert!(sum.starts_with(&sha), "{name}: {sum}");
    }
    let blob = b.state().join("cache").join(&sha[..2]).join(&sha[2..]);
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        data,
        "stored after the fetch"
    );
    assert_eq!(event_lines(&a, "stage-in"), 2);
}
