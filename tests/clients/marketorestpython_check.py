#!/usr/bin/env python3
"""Drives `oppsync sim marketo` with the marketorestpython client from PyPI, to show that the
simulator speaks Marketo as a third-party client expects: create a company, a lead, an
opportunity and a role, read each back, then delete them.

usage: marketorestpython_check.py PATH_TO_OPPSYNC
Prints one line per check and a closing 'marketorestpython: N passed, M failed'; exits 1 on any
failure. Run by .ci/run, which installs the client into a virtualenv first.
"""
import subprocess
import sys

from marketorestpython.client import MarketoClient

CLIENT_ID, SECRET = "oppsync-sim", "oppsync-sim-secret"


def main():
    sim = subprocess.Popen([sys.argv[1], "sim", "marketo", "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        url = sim.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert url.startswith("http://127.0.0.1:"), url
        return run_checks(url)
    finally:
        sim.kill()
        sim.wait()


def run_checks(url):
    mc = MarketoClient("000-SIM-000", CLIENT_ID, SECRET, max_retry_time=10, requests_timeout=10)
    mc.host = url  # the client builds https://<munchkin>.mktorest.com; point it at the simulator
    passed, failed = 0, 0

    def check(name, condition, detail=""):
        nonlocal passed, failed
        if condition:
            passed += 1
            print(f"ok   {name}")
        else:
            failed += 1
            print(f"FAIL {name} {detail}")

    company = mc.execute(method="create_update_companies", input=[{"externalCompanyId": "acct-1", "company": "Fabrikam Inc", "industry": "Consulting"}], action="createOrUpdate", dedupeBy="dedupeFields")
    check("create company", company[0]["status"] == "created" and company[0]["seq"] == 0, company)
    lead = mc.execute(method="create_update_leads", leads=[{"email": "ana.ruiz@example.com", "firstName": "Ana", "externalCompanyId": "acct-1"}], action="createOrUpdate", lookupField="email")
    check("create lead", lead[0]["status"] == "created" and isinstance(lead[0]["id"], int), lead)
    lead_id = lead[0]["id"]
    opp = mc.execute(method="create_update_opportunities", input=[{"externalOpportunityId": "opp-1", "name": "Fabrikam - 200 licences", "amount": 250000.0, "closeDate": "2025-06-30", "isClosed": False, "externalCompanyId": "acct-1"}], action="createOrUpdate", dedupeBy="dedupeFields")
    check("create opportunity", opp[0]["status"] == "created" and opp[0]["marketoGUID"], opp)
    role = mc.execute(method="create_update_opportunities_roles", input=[{"externalOpportunityId": "opp-1", "leadId": lead_id, "role": "Customer", "isPrimary": True}], action="createOrUpdate", dedupeBy="dedupeFields")
    check("create role", role[0]["status"] == "created", role)

    companies = mc.execute(method="get_companies", filterType="externalCompanyId", filterValues=["acct-1"], fields=["company", "industry"])
    check("read company", companies and companies[0]["company"] == "Fabrikam Inc", companies)
    leads = mc.execute(method="get_multiple_leads_by_filter_type", filterType="email", filterValues=["ANA.RUIZ@example.com"], fields=["id", "firstName", "externalCompanyId"])
    check("read lead", leads and leads[0]["id"] == lead_id and leads[0]["firstName"] == "Ana", leads)
    opps = mc.execute(method="get_opportunities", filterType="externalOpportunityId", filterValues=["opp-1"], fields=["name", "amount", "externalCompanyId"])
    check("read opportunity", opps and opps[0]["amount"] == 250000.0 and opps[0]["externalCompanyId"] == "acct-1", opps)
    roles = mc.execute(method="get_opportunity_roles", filterType="externalOpportunityId", filterValues=["opp-1"], fields=["leadId", "role", "isPrimary"])
    check("read role", roles and roles[0]["leadId"] == lead_id and roles[0]["isPrimary"] is True, roles)

    deleted = mc.execute(method="delete_opportunity_roles", input=[{"externalOpportunityId": "opp-1", "leadId": lead_id, "role": "Customer"}], deleteBy="dedupeFields")
    check("delete role", deleted[0]["status"] == "deleted", deleted)
    deleted = mc.execute(method="delete_opportunities", input=[{"externalOpportunityId": "opp-1"}], deleteBy="dedupeFields")
    check("delete opportunity", deleted[0]["status"] == "deleted", deleted)
    deleted = mc.execute(method="delete_companies", input=[{"externalCompanyId": "acct-1"}], deleteBy="dedupeFields")
    check("delete company", deleted[0]["status"] == "deleted", deleted)
    deleted = mc.execute(method="delete_lead", id=[lead_id])
    check("delete lead", deleted[0]["status"] == "deleted", deleted)
    gone = mc.execute(method="get_opportunities", filterType="externalOpportunityId", filterValues=["opp-1"])
    check("opportunity gone", gone == [], gone)

    print(f"marketorestpython: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
