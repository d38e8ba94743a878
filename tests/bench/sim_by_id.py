#!/usr/bin/env python3
"""The Marketo simulator's calls by id at scale: N opportunities with a role each and N
companies, then five calls each of: queries of 300 companies and of 300 leads by id (as
`oppsync recheck` and the daily sample ask), then 300 leads deleted by id (the N roles
standing, held by another lead), 300 companies by id, 300 roles by marketoGUID
(`deleteBy: idField`); each call timed.

usage: tests/bench/sim_by_id.py [N] [BIN...]   (defaults 100000, target/release/oppsync)

Each BIN's simulator is started on a free loopback port with its limits raised, filled, measured
and stopped in turn; prints the median, minimum and maximum time a call took, for each kind.
oppsync itself deletes by dedupe fields and never deletes leads; the deletes are the paths a
third-party client takes (marketorestpython's `delete_opportunity_roles`, `delete_lead` and
`delete_companies` by id). Standard library only; every request goes to 127.0.0.1.
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
        company_ids = []
        for start in range(0, n, 300):
            ids = [f"o{i}" for i in range(start, min(n, start + 300))]
            call("/rest/v1/opportunities.json",
                 {"input": [{"externalOpportunityId": i, "name": i} for i in ids]}, token)
            roles = call("/rest/v1/opportunities/roles.json",
                         {"input": [{"externalOpportunityId": i, "leadId": lead, "role": "Buyer"}
                                    for i in ids]}, token)
            guids += [r["marketoGUID"] for r in roles["result"]]
            companies = call("/rest/v1/companies.json",
                             {"action": "createOrUpdate", "dedupeBy": "dedupeFields",
                              "input": [{"externalCompanyId": f"c{i}", "company": f"c{i}"}
                                        for i in range(start, min(n, start + 300))]}, token)
            company_ids += [r["id"] for r in companies["result"]]
        lead_ids = []
        for start in range(0, 1500, 300):
            leads = call("/rest/v1/leads.json",
                         {"input": [{"email": f"l{i}@example.com"}
                                    for i in range(start, start + 300)]}, token)
            lead_ids += [r["id"] for r in leads["result"]]

        def timed(name, what, make_call, ids, check):
            times = []
            for k in range(5):
                batch = ids[k * 300:(k + 1) * 300]
                started = time.perf_counter()
                answer = make_call(batch)
                times.append(time.perf_counter() - started)
                if not check(answer, batch):
                    sys.exit(f"{binary}: {name}: {answer.get('result', answer)!s:.200}")
            times.sort()
            print(f"{binary}: {n} roles and companies, 300 {name} {what} a call: "
                  f"median {times[2] * 1000:.1f} ms "
                  f"({times[0] * 1000:.1f}-{times[-1] * 1000:.1f} ms)")

        for name, ids in [("companies", company_ids), ("leads", lead_ids)]:
            timed(name, "queried by id",
                  lambda batch, name=name: call(
                      f"/rest/v1/{name}.json?filterType=id&fields=id&filterValues="
                      + ",".join(map(str, batch)), token=token),
                  ids, lambda answer, batch: len(answer["result"]) == len(batch))
        deletes = [
            ("leads", "/rest/v1/leads/delete.json",
             lambda batch: {"input": [{"id": i} for i in batch]}, lead_ids),
            ("companies", "/rest/v1/companies/delete.json",
             lambda batch: {"deleteBy": "idField", "input": [{"id": i} for i in batch]},
             company_ids),
            # Last, so that the leads' deletes meet every role.
            ("roles", "/rest/v1/opportunities/roles/delete.json",
             lambda batch: {"deleteBy": "idField",
                            "input": [{"marketoGUID": g} for g in batch]}, guids),
        ]
        for name, path, body, ids in deletes:
            timed(name, "deleted by id",
                  lambda batch, path=path, body=body: call(path, body(batch), token), ids,
                  lambda answer, batch: all(r["status"] == "deleted" for r in answer["result"]))
    finally:
        sim.terminate()
        sim.wait()


for binary in binaries:
    measure(binary)
