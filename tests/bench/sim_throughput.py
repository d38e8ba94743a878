#!/usr/bin/env python3
"""Marketo simulator throughput: REST calls per second of 300-record opportunity batches.

usage: tests/bench/sim_throughput.py URL [CALLS] [THREADS]   (defaults 2000 calls, 4 threads)

URL is a running `oppsync sim marketo` with its limits raised (--rate-limit-calls, --daily-quota,
--concurrency). Issue 9 asks that the simulator is never the bottleneck: at least 200 calls/s.
Standard library only; every request goes to the loopback URL given.
"""
import json
import sys
import threading
import time
import urllib.request

url = sys.argv[1].rstrip("/")
calls = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 4

token = json.load(urllib.request.urlopen(
    f"{url}/identity/oauth/token?grant_type=client_credentials"
    "&client_id=oppsync-sim&client_secret=oppsync-sim-secret"))["access_token"]


def batch(n):
    records = [{
        "externalOpportunityId": f"00000000-0000-0000-{n:04x}-{i:012x}",
        "name": f"Opportunity {n}-{i}", "amount": 1000.5, "stage": "Open",
        "closeDate": "2025-06-30", "isClosed": False, "isWon": False, "probability": 40,
        "description": "x" * 200,
    } for i in range(300)]
    return json.dumps({"action": "createOrUpdate", "dedupeBy": "dedupeFields",
                       "input": records}).encode()


bodies = [batch(n % 64) for n in range(64)]
errors = []
lock = threading.Lock()
next_call = [0]


def worker():
    while True:
        with lock:
            n = next_call[0]
            if n >= calls:
                return
            next_call[0] += 1
        request = urllib.request.Request(
            f"{url}/rest/v1/opportunities.json", data=bodies[n % 64], method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        answer = json.load(urllib.request.urlopen(request))
        if not answer.get("success"):
            with lock:
                errors.append(answer.get("errors"))


started = time.monotonic()
pool = [threading.Thread(target=worker) for _ in range(threads)]
for t in pool:
    t.start()
for t in pool:
    t.join()
elapsed = time.monotonic() - started
print(f"{calls} calls of 300 records with {threads} threads in {elapsed:.2f} s: "
      f"{calls / elapsed:.0f} calls/s, {len(errors)} errors")
