"""Issue 20's staging benchmark (`scripts/bench.sh staging`).

Transfer rates through the broker on loopback, with one `--no-shared-fs`
agent whose private directory is on the same disk: one large file (1 GB;
BENCH_STAGING_MB sets the size) and 10,000 files of 10 KB
(BENCH_STAGING_FILES sets the count), each staged in (broker -> agent, a
declared input) and out (agent -> broker, a declared output), against `cp`
of the same data on the same disk. Rates come from the agent's event log
(`stage-in ID BYTES MS`, `stage-out ID BYTES MS`: from the first request to
the last byte verified, the broker's hashing and blob writes included).
Bars: >= 200 MB/s for the large file, >= 2,000 small files/s.
Everything it writes is removed at the end (the disk is shared).
"""
import os, shutil, subprocess, time

MB = 1 << 20


def _events(path, kind):
    """(bytes, ms) of each `kind` line of the agent's event log."""
    out = []
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            parts = line.split()
            i = parts.index(kind) if kind in parts else -1
            if i >= 0 and len(parts) >= i + 4 and parts[i + 2].isdigit():
                out.append((int(parts[i + 2]), int(parts[i + 3])))
    return out


def settle_disk():
    """Waits until the disk has written back what is dirty (`sync`), so a
    workload is not timed while the writeback of the data made for it (or of
    the workload before) competes with it: on this VM that alone moved the
    small-file rates by 2x from one run to the next."""
    os.sync()


def _run(b, name, text, cwd):
    settle_disk()
    wf = os.path.join(cwd, f"{name}.yaml")
    with open(wf, "w") as f:
        f.write(text)
    out = subprocess.run([b.cli_exe, "--access", b.access, "submit", "--json", wf],
                         capture_output=True, text=True, cwd=cwd)
    if out.returncode != 0:
        raise SystemExit(f"submit {name} failed: {out.stderr}")
    import json
    run = json.loads(out.stdout)["run"]
    elapsed, state = b.wait_run(run)
    if state != "succeeded":
        raise SystemExit(f"run {name} ended {state}; see {b.dir}")
    return elapsed


def make_data(work, size_mb, files):
    """The inputs both benches stage: `big.bin` and `small/I.bin` (10 KB each)."""
    with open(os.path.join(work, "big.bin"), "wb") as f:
        for _ in range(size_mb // 16):
            f.write(os.urandom(16 * MB))
        f.write(os.urandom((size_mb % 16) * MB))
    for i in range(files):
        with open(os.path.join(work, "small", f"{i}.bin"), "wb") as f:
            f.write(os.urandom(10 * 1024))


def run_workloads(b, work, size_mb, files):
    """The two workflows: one large file in and out, then many small ones."""
    small = ", ".join(f"small/{i}.bin" for i in range(files))
    py = ("import os,sys; d=os.environ['SCALABLE_STAGE_DIR']; os.makedirs(d+'/o',exist_ok=True)\n"
          f"for i in range({files}): open(f'{{d}}/o/{{i}}.bin','wb').write(os.urandom(10240))")
    outs = ", ".join(f"o/{i}.bin" for i in range(files))
    _run(b, "big", f"""workflow: big
jobs:
  - name: big_in
    inputs: [big.bin]
    command: ["true"]
  - name: big_out
    outputs: [out.bin]
    command: [sh, -c, "head -c {size_mb}M /dev/urandom > $SCALABLE_STAGE_DIR/out.bin"]
""", work)
    _run(b, "small", f"""workflow: small
jobs:
  - name: small_in
    inputs: [{small}]
    command: ["true"]
  - name: small_out
    outputs: [{outs}]
    command: [python3, -c, {py!r}]
""", work)


def split_events(events, size_mb, files):
    """(bytes, ms) of the large file in and out, and the lists of the small
    workload's stage-in and stage-out lines."""
    ins, outs = _events(events, "stage-in"), _events(events, "stage-out")
    big_in = max(ins, key=lambda e: e[0])
    big_out = max(outs, key=lambda e: e[0])
    small_in = [e for e in ins if 0 < e[0] < size_mb * MB and e[0] >= files * 10240]
    small_out = [e for e in outs if e[0] < size_mb * MB and e[0] >= files * 10240]
    return big_in, big_out, small_in, small_out


def rate(e):
    """MB/s of one (bytes, ms) line."""
    return e[0] / MB / max(e[1] / 1000.0, 1e-3)


def files_rate(files):
    """files/s of one (bytes, ms) line of the small workload."""
    return lambda e: files / max(e[1] / 1000.0, 1e-3)


def _timed(cmd, cwd):
    settle_disk()
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=cwd)
    subprocess.run(["sync"], check=True)
    return time.perf_counter() - t


def scratch_dirs(name):
    """A fresh scratch dir for one staging bench: (scratch, the agent's private
    workdir, the submit dir with its `small/`, the agent's event log)."""
    scratch = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"{name}.{os.getpid()}")
    private = os.path.join(scratch, "agent")
    work = os.path.join(scratch, "work")
    os.makedirs(private)
    os.makedirs(os.path.join(work, "small"))
    return scratch, private, work, os.path.join(scratch, "events.log")


def bench_staging(Broker, BIN):
    size_mb = int(os.environ.get("BENCH_STAGING_MB", "1024"))
    files = int(os.environ.get("BENCH_STAGING_FILES", "10000"))
    scratch, private, work, events = scratch_dirs("scalable-bench-staging")
    b = None
    try:
        make_data(work, size_mb, files)
        b = Broker(agents=[["--cpus", "2", "--no-shared-fs", "--workdir", private,
                            "--event-log", events]])
        b.cli_exe = f"{BIN}/scalable"
        run_workloads(b, work, size_mb, files)
        big_in, big_out, small_in, small_out = split_events(events, size_mb, files)
        cp_big = _timed(["cp", "big.bin", "big-copy.bin"], work)
        cp_small = _timed(["cp", "-r", "small", "small-copy"], work)

        frate = files_rate(files)
        print(f"staging: large file {size_mb} MB: in {rate(big_in):.0f} MB/s ({big_in[1]} ms), "
              f"out {rate(big_out):.0f} MB/s ({big_out[1]} ms); cp {size_mb / cp_big:.0f} MB/s")
        ok = min(rate(big_in), rate(big_out)) >= 200
        if small_in and small_out:
            si, so = small_in[0], small_out[0]
            print(f"staging: {files} files of 10 KB: in {frate(si):.0f} files/s ({si[1]} ms), "
                  f"out {frate(so):.0f} files/s ({so[1]} ms); cp {files / cp_small:.0f} files/s")
            ok &= min(frate(si), frate(so)) >= 2000
        else:
            print("staging: small files: no stage-in/out figures in the event log")
            ok = False
        print(f"staging: bars >= 200 MB/s and >= 2000 files/s: {'met' if ok else 'NOT met'}")
        return ok
    finally:
        if b is not None:
            b.stop()
            shutil.rmtree(b.dir, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
