#!/usr/bin/env python3
"""A TCP proxy for the benchmarks: adds a fixed latency to every HTTP request and counts
requests by service, method and response status.

Each `--map LISTEN:UPSTREAM:NAME` forwards 127.0.0.1:LISTEN to 127.0.0.1:UPSTREAM. A request
is the first client bytes after a response began on that connection (HTTP/1.1 sends one
request at a time on a connection; a `100 Continue` is not a response), and is held
`--latency-ms` before it goes on, as a far region would. On SIGTERM or SIGINT the counts are written to `--counts` as JSON:
{"blob": {"requests": n, "GET": n, ..., "status": {"201": n, ...}}, ...}.

Usage: latency_proxy.py --latency-ms 250 --counts out.json --map 20000:10000:blob ...
"""
import argparse
import asyncio
import json
import signal
import time
from collections import defaultdict


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--latency-ms", type=int, default=250)
    p.add_argument("--counts", required=True)
    p.add_argument("--map", action="append", required=True, help="LISTEN:UPSTREAM:NAME")
    args = p.parse_args()
    delay = args.latency_ms / 1000.0
    counts = defaultdict(lambda: defaultdict(int))
    statuses = defaultdict(lambda: defaultdict(int))
    first = defaultdict(dict)
    last_seen = defaultdict(dict)

    async def pipe(reader, writer, name, requests, conn):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                head = data.split(b"\r\n", 1)[0].decode("latin-1", "replace")
                if requests and conn["answered"]:
                    conn["answered"] = False
                    method = head.split(" ", 1)[0]
                    counts[name]["requests"] += 1
                    counts[name][method] += 1
                    first[name].setdefault(method, time.time())
                    last_seen[name][method] = time.time()
                    await asyncio.sleep(delay)
                elif not requests and not conn["answered"] and head.startswith("HTTP/"):
                    parts = head.split(" ")
                    if len(parts) > 1 and parts[1] != "100":
                        conn["answered"] = True
                        statuses[name][parts[1]] += 1
                if not requests:
                    counts[name]["conflicts"] += data.count(b"HTTP/1.1 409 ") + data.count(b"HTTP/1.1 412 ")
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def serve(listen, upstream, name):
        async def handle(cr, cw):
            try:
                ur, uw = await asyncio.open_connection("127.0.0.1", upstream)
            except OSError:
                cw.close()
                return
            try:
                conn = {"answered": True}
                await asyncio.gather(pipe(cr, uw, name, True, conn), pipe(ur, cw, name, False, conn))
            except asyncio.CancelledError:
                pass

        return await asyncio.start_server(handle, "127.0.0.1", listen, backlog=1024)

    def dump():
        out = {}
        for name in set(counts) | set(statuses):
            d = dict(counts[name])
            d["status"] = dict(statuses[name])
            d["first"] = dict(first[name])
            d["last"] = dict(last_seen[name])
            out[name] = d
        with open(args.counts, "w") as f:
            json.dump(out, f, indent=1, sort_keys=True)

    async def run():
        servers = []
        for m in args.map:
            listen, upstream, name = m.split(":")
            servers.append(await serve(int(listen), int(upstream), name))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        while not stop.is_set():
            dump()
            try:
                await asyncio.wait_for(stop.wait(), 2)
            except asyncio.TimeoutError:
                pass
        dump()
        for s in servers:
            s.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
