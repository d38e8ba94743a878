#!/usr/bin/env python3
"""The Marketo simulator's deletes by id at scale: N opportunities with a role each, then five
calls each deleting 300 roles by marketoGUID (`deleteBy: idField`), each timed.

usage: tests/bench/sim_delete_by_id.py [N] [BIN...]   (defaults 100000, target/release/oppsync)

Each BIN's simulator is started on a free loopback port with its limits raised, filled, measured
and stopped in turn; prints the median, minimum and maximum time a call took. oppsync itself
deletes by dedupe fields; this is the path a third-party client takes (marketorestpython's
`delete_opportunity_roles` by id). Standard library only; every request goes to 127.0.0.1.
"""
import json
import re
import subprocess
import sys
import time
import urllib.request

n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
binaries = sys.argv[2:] or ["target/release/oppsync"]


def measure(binary):
    sim = subprocess.Popen(
        [binary, "sim", "marketo", "--port", "0", "--rate-limit-calls", "1000000",
         "--daily-quota", "100000000"],
        stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", sim.stdout.readline()).group(0)

        def call(path, body=None, token=None):
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = "Bearer " + token
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(url + path, data=data, headers=headers)
            return json.load(urllib.request.urlopen(request))

        token = call("/identity/oauth/token?grant_type=client_credentials"
                     "&client_id=oppsync-sim&client_secret=oppsync-sim-secret")["access_token"]
        lead = call("/rest/v1/leads.json", {"input": [{"email": "a@example.com"}]},
                    token)["result"][0]["id"]
        guids = []
        for start in range(0, n, 300):
            ids = [f"o{i}" for i in range(start, min(n, start + 300))]
            call("/rest/v1/opportunities.json",
                 {"input": [{"externalOpportunityId": i, "name": i} for i in ids]}, token)
            roles = call("/rest/v1/opportunities/roles.json",
                         {"input": [{"externalOpportunityId": i, "leadId": lead, "role": "Buyer"}
                                    for i in ids]}, token)
            guids += [r["marketoGUID"] for r in roles["result"]]
        times = []
        for k in range(5):
            batch = guids[k * 300:(k + 1) * 300]
            started = time.perf_counter()
            answer = call("/rest/v1/opportunities/roles/delete.json",
                          {"deleteBy": "idField", "input": [{"marketoGUID": g} for g in batch]},
                          token)
            times.append(time.perf_counter() - started)
            if not all(r["status"] == "deleted" for r in answer["result"]):
                sys.exit(f"{binary}: a role was not deleted: {answer['result'][:2]}")
    finally:
        sim.terminate()
        sim.wait()
    times.sort()
    print(f"{binary}: {n} roles, 300 deleted by id a call: median {times[2] * 1000:.1f} ms "
          f"({times[0] * 1000:.1f}-{times[-1] * 1000:.1f} ms)")


for binary in binaries:
    measure(binary)
