"""Issue 20's S3 staging row (`scripts/bench.sh staging_s3`).

The same two workloads as `bench_staging.py` (one large file, many 10 KB
files, each staged in as a declared input and out as a declared output) with
one `--no-shared-fs --storage s3://...` agent: the bytes go through moto's S3
on loopback (`scripts/moto-testbed.sh start`, started if it is not running)
with the real `aws` CLI instead of the broker's QUIC streams. Stage-out
includes the broker fetching each output back from the store and verifying
it. Sizes: BENCH_S3_MB (default 1024) and BENCH_S3_FILES (default 10000;
every file costs `aws` processes of its own, so expect minutes: lower it on
a small machine). Rates come from the agent's event log, as in
bench_staging.py. No bar: moto is a Python server, so these are figures of
this stand-in, not of S3. Everything it writes (files, the bucket) is
removed at the end.
"""
import os, shutil, subprocess, time

from bench_staging import files_rate, make_data, rate, run_workloads, scratch_dirs, split_events

HERE = os.path.dirname(os.path.abspath(__file__))


def _moto_env():
    subprocess.run([os.path.join(HERE, "moto-testbed.sh"), "start"], check=True,
                   stdout=subprocess.DEVNULL)
    env_file = os.path.join(os.environ.get("SCALABLE_MOTO_DIR", "/tmp/scalable-moto"), "env")
    with open(env_file) as f:
        return dict(line.strip().split("=", 1) for line in f if "=" in line)


def bench_staging_s3(Broker, BIN):
    size_mb = int(os.environ.get("BENCH_S3_MB", "1024"))
    files = int(os.environ.get("BENCH_S3_FILES", "10000"))
    os.environ.update(_moto_env())
    bucket = f"scalable-bench-{os.getpid()}"
    subprocess.run(["aws", "s3api", "create-bucket", "--bucket", bucket], check=True,
                   stdout=subprocess.DEVNULL)
    scratch, private, work, events = scratch_dirs("scalable-bench-s3")
    b = None
    try:
        make_data(work, size_mb, files)
        b = Broker(agents=[["--cpus", "2", "--no-shared-fs", "--storage", f"s3://{bucket}/bench",
                            "--workdir", private, "--event-log", events]])
        b.cli_exe = f"{BIN}/scalable"
        started = time.perf_counter()
        run_workloads(b, work, size_mb, files)
        total = time.perf_counter() - started
        big_in, big_out, small_in, small_out = split_events(events, size_mb, files)
        frate = files_rate(files)

        print(f"staging s3 (moto): large file {size_mb} MB: in {rate(big_in):.0f} MB/s ({big_in[1]} ms), "
              f"out {rate(big_out):.0f} MB/s ({big_out[1]} ms)")
        if small_in and small_out:
            si, so = small_in[0], small_out[0]
            print(f"staging s3 (moto): {files} files of 10 KB: in {frate(si):.1f} files/s ({si[1]} ms), "
                  f"out {frate(so):.1f} files/s ({so[1]} ms)")
        print(f"staging s3 (moto): both workloads {total:.0f} s")
        return True
    finally:
        if b is not None:
            b.stop()
            shutil.rmtree(b.dir, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
        subprocess.run(["aws", "s3", "rb", "--force", f"s3://{bucket}"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
