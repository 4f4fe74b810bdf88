"""Event-to-blob latency of incremental sync on the local stand-ins.

Configures S3 -> SQS notifications for a fresh bucket (s3-blob-sync setup-events), starts
`s3-blob-sync watch`, writes N objects to S3 at a steady rate, and measures for each key the
time from the end of its PUT to the checkpoint row saying it was copied (the row is written
right after the blob is committed). Prints median, p90, p99 and max.

Usage: eval "$(scripts/emulators start)"; cargo build --release
       .tools/venv/bin/python bench/event_latency.py [--events 1000] [--rate 50]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime

import boto3

ap = argparse.ArgumentParser()
ap.add_argument("--events", type=int, default=1000)
ap.add_argument("--rate", type=float, default=50.0, help="PUTs per second")
ap.add_argument("--bin", default="target/release/s3-blob-sync")
args = ap.parse_args()

endpoint = os.environ["AWS_ENDPOINT_URL"]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
tag = uuid.uuid4().hex[:8]
bucket, container = f"lat-{tag}", f"lat-{tag}"
s3.create_bucket(Bucket=bucket)
queue_url = sqs.create_queue(QueueName=f"lat-{tag}")["QueueUrl"]
env = dict(os.environ, SYNC_SQS_QUEUE_URL=queue_url, SYNC_TARGET_CONTAINER=container,
           SYNC_COPY_QUEUE=f"copy-{tag}", SYNC_REJECT_QUEUE=f"rejects-{tag}",
           SYNC_CHECKPOINT_TABLE=f"lat{tag}", SYNC_COPY_PATH="streamed", SYNC_MODE="mirror",
           SYNC_LOG_FORMAT="json", RUST_LOG="warn")
subprocess.run([args.bin, "setup-events", "--bucket", bucket, "--queue-url", queue_url, "--fix-policy"],
               env=env, check=True, stdout=subprocess.DEVNULL)
worker = subprocess.Popen([args.bin, "watch", "--workers", "32"], env=env, stderr=open(f"/tmp/lat-{tag}.log", "w"))
time.sleep(1.0)

put_done = {}
def writer():
    interval = 1.0 / args.rate
    start = time.time()
    for i in range(args.events):
        key = f"k/{i:05d}"
        s3.put_object(Bucket=bucket, Key=key, Body=os.urandom(1024))
        put_done[key] = time.time()
        sleep = start + (i + 1) * interval - time.time()
        if sleep > 0:
            time.sleep(sleep)
t = threading.Thread(target=writer)
t.start()

done = {}
deadline = time.time() + 600
last_progress = time.time()
while time.time() < deadline:
    time.sleep(1.0)
    if worker.poll() is not None:
        sys.exit(f"watch exited with {worker.returncode}; see /tmp/lat-{tag}.log")
    if time.time() - last_progress > 60:
        print(f"no progress for 60 s at {len(done)} objects; see /tmp/lat-{tag}.log", file=sys.stderr)
        break
    out = subprocess.run([args.bin, "status", "--bucket", bucket, "--json"], env=env,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        row = json.loads(line)
        if row["outcome"] == "copied" and row["key"] not in done:
            done[row["key"]] = datetime.fromisoformat(row["updatedAt"].replace("Z", "+00:00")).timestamp()
            last_progress = time.time()
    if len(done) >= args.events and not t.is_alive():
        break
t.join()
worker.terminate()
worker.wait(timeout=30)

lat = sorted(done[k] - put_done[k] for k in done if k in put_done)
if len(lat) < args.events:
    print(f"only {len(lat)} of {args.events} objects arrived", file=sys.stderr)
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(json.dumps({"events": args.events, "rate_per_s": args.rate, "arrived": len(lat),
                  "median_s": round(statistics.median(lat), 3), "p90_s": round(q(0.90), 3),
                  "p99_s": round(q(0.99), 3), "max_s": round(lat[-1], 3)}))
