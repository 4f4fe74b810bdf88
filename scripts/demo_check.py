"""The demo's claims, checked against the stand-ins. Each check prints one `ok:` line, or a
`FAILED:` line naming what did not hold and exits 1, so `scripts/demo` stops right there.

  demo_check.py blobs CONTAINER NAME...           the container holds exactly these blobs
  demo_check.py run-json FILE FIELD=N...           a run summary's counters (e.g. transferred=0)
  demo_check.py webhook FILE RUN_ID                the webhook for RUN_ID arrived
  demo_check.py converge CONTAINER SECS SPEC...    each SPEC holds within SECS seconds:
                                                   `name=<bytes>` (exists, that size) or `name=gone`
"""
import base64
import datetime
import hashlib
import hmac
import json
import sys
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

# Azurite's public, documented development key (not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def fail(msg):
    print(f"FAILED: {msg}", flush=True)
    sys.exit(1)


def blobs(container):
    """name -> size of every blob in the container (Azurite, read/list SAS for 5 minutes)."""
    se = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    f = {"sv": "2022-11-02", "ss": "b", "srt": "sco", "sp": "rl", "se": se, "spr": "https,http"}
    to_sign = "\n".join(["devstoreaccount1", f["sp"], f["ss"], f["srt"], "", se, "", f["spr"], f["sv"], "", ""])
    f["sig"] = base64.b64encode(hmac.new(base64.b64decode(KEY), to_sign.encode(), hashlib.sha256).digest()).decode()
    url = f"http://127.0.0.1:10000/devstoreaccount1/{container}?restype=container&comp=list&" + urllib.parse.urlencode(f)
    try:
        root = ET.parse(urllib.request.urlopen(url, timeout=10)).getroot()
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return {}
        raise
    return {b.findtext("Name"): int(b.find("Properties").findtext("Content-Length")) for b in root.iter("Blob")}


def check_blobs(container, names):
    have = blobs(container)
    missing = sorted(set(names) - set(have))
    extra = sorted(set(have) - set(names))
    if missing or extra:
        fail(f"container {container}: missing blobs {missing}, unexpected blobs {extra}")
    print(f"ok: container {container} holds exactly the {len(names)} expected blobs", flush=True)


def check_run_json(path, conds):
    with open(path) as fh:
        text = fh.read().strip()
    try:
        summary = json.loads(text.splitlines()[-1])
    except (ValueError, IndexError):
        fail(f"{path} does not end with a run summary in JSON: {text[-200:]!r}")
    counters = summary.get("counters", {})
    for c in conds:
        field, want = c.split("=")
        got = counters.get(field, 0)
        if got != int(want):
            fail(f"run {summary.get('runId')}: counter {field} is {got}, expected {want}")
    print(f"ok: run {summary.get('runId')} counters {', '.join(conds)}", flush=True)


def check_webhook(path, run_id, secs=10):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            for line in open(path):
                body = json.loads(line)
                if run_id in json.dumps(body):
                    print(f"ok: webhook for run {run_id} arrived: {body.get('text', '')}", flush=True)
                    return
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.2)
    fail(f"no webhook for run {run_id} within {secs} s (receiver output: {path})")


def converge(container, secs, specs):
    want = dict(s.split("=", 1) for s in specs)
    started = time.time()
    deadline = started + float(secs)
    while True:
        have = blobs(container)
        wrong = {}
        for name, w in want.items():
            got = have.get(name)
            if (w == "gone" and got is not None) or (w != "gone" and got != int(w)):
                wrong[name] = f"want {w}, have {'gone' if got is None else got}"
        if not wrong:
            print(f"ok: {len(want)} live changes landed in {time.time() - started:.1f} s (bound {secs} s)", flush=True)
            return
        if time.time() > deadline:
            fail(f"live changes not applied within {secs} s: {wrong}")
        time.sleep(0.2)


cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "blobs":
    check_blobs(args[0], args[1:])
elif cmd == "run-json":
    check_run_json(args[0], args[1:])
elif cmd == "webhook":
    check_webhook(args[0], args[1])
elif cmd == "converge":
    converge(args[0], args[1], args[2:])
else:
    fail(f"unknown check {cmd!r}")
