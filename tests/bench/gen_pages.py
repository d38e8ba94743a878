#!/usr/bin/env python3
"""Writes a synthetic Dynamics export as Web API pages, for the pull benchmark.

usage: gen_pages.py OUT_DIR OPPORTUNITIES [PAGE_SIZE] [--change FRACTION] [--scattered-ids]

Per opportunity: one contact (half of them the customer, with an account parent), one
stakeholder connection pair; one account per ten opportunities. Every account, contact and
opportunity has an owner, as in Dynamics: one of the system users (one per thousand
opportunities, one in twenty of them disabled), or a team for one record in fifty. Amounts come
in the transaction and the base currency. Pages hold PAGE_SIZE records (default 5000, the Web
API maximum), with the annotations the real service sends.

With --change FRACTION, writes instead what a delta pull of the same org brings after that
share of it changed: every k-th opportunity (k = 1/FRACTION) with a new amount and stage, and
as many contacts with a new job title.

Ids are sequential by default (record n of a kind is ...-{n:012x}), so that the text order of
the ids is the order the pages list the records: lookups by id then read the staging tables in
order. With --scattered-ids, or SCATTERED_IDS=1 in the environment (so that it reaches this
script from any benchmark in tests/bench/), each id is a hash of the same kind and number, in no
order, as a real org's ids are in text order: the same org, with lookups by id as scattered as
they are in production. Give it to the delta pages of the same org too.

With NO_EMAIL_EVERY=K in the environment, every K-th contact has no email (in the delta pages
too), as many contacts of a real org have none: its lead and its roles cannot be sent.
"""
import hashlib
import json
import os
import sys

SCATTERED = os.environ.get("SCATTERED_IDS", "") not in ("", "0")
NO_EMAIL_EVERY = int(os.environ.get("NO_EMAIL_EVERY", "0") or 0)

ORG = "https://bench.crm.dynamics.com/api/data/v9.2/"
FV = "@OData.Community.Display.V1.FormattedValue"
LT = "@Microsoft.Dynamics.CRM.lookuplogicalname"


def guid(kind, n):
    if SCATTERED:
        h = hashlib.md5(f"{kind}/{n}".encode()).hexdigest()
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"
    return f"{kind:08x}-0000-4000-8000-{n:012x}"


def users(n):
    return max(10, n // 1000)


def owner(i, n):
    """The owner annotations of the i-th record: a system user, or a team for one in fifty."""
    if i % 50 == 49:
        return {"_ownerid_value" + FV: "Sales Team", "_ownerid_value" + LT: "team",
                "_ownerid_value": guid(6, 0)}
    u = i % users(n)
    return {"_ownerid_value" + FV: f"User{u} Seller", "_ownerid_value" + LT: "systemuser",
            "_ownerid_value": guid(5, u)}


def write_users(out, n, size):
    pages(out, "systemusers", ({
        "fullname": f"User{u} Seller", "firstname": f"User{u}", "lastname": "Seller",
        "internalemailaddress": f"user{u}@bench.example", "title": "Account Executive",
        "mobilephone": None, "address1_telephone1": "+1 425 555 0100",
        "isdisabled" + FV: "Disabled" if u % 20 == 19 else "Enabled", "isdisabled": u % 20 == 19,
        "modifiedon": "2025-03-01T08:00:00Z", "systemuserid": guid(5, u)} for u in range(users(n))), size)


def pages(out, entity_set, records, size):
    batch, index = [], 0
    for record in records:
        batch.append(record)
        if len(batch) == size:
            write(out, entity_set, index, batch)
            batch, index = [], index + 1
    if batch:
        write(out, entity_set, index, batch)


def write(out, entity_set, index, batch):
    path = os.path.join(out, f"{entity_set}-{index:05d}.json")
    with open(path, "w") as f:
        json.dump({"@odata.context": f"{ORG}$metadata#{entity_set}", "value": batch}, f)


def contact(i, n, accounts, jobtitle="Director", modifiedon="2025-05-01T16:10:02Z"):
    return {"firstname": f"First{i}", "lastname": f"Last{i}", "fullname": f"First{i} Last{i}",
            "emailaddress1": None if NO_EMAIL_EVERY and i % NO_EMAIL_EVERY == NO_EMAIL_EVERY - 1
            else f"person{i}@example.com", "jobtitle": jobtitle, "telephone1": None,
            "_parentcustomerid_value" + LT: "account", "_parentcustomerid_value": guid(1, i % accounts),
            **owner(i, n), "statecode": 0, "modifiedon": modifiedon, "contactid": guid(2, i)}


def write_accounts_and_contacts(out, n, accounts, size):
    write_users(out, n, size)
    pages(out, "accounts", ({
        "name": f"Account {i}", "websiteurl": f"https://a{i}.example", "industrycode": 7,
        "industrycode" + FV: "Consulting", "numberofemployees": 100 + i % 900, "revenue": 1e6 + i,
        "revenue_base": 1e6 + i, "address1_city": "Redmond", **owner(i, n), "statecode": 0,
        "modifiedon": "2025-05-01T10:00:00Z", "accountid": guid(1, i)} for i in range(accounts)), size)
    pages(out, "contacts", (contact(i, n, accounts) for i in range(n)), size)


def main():
    global SCATTERED
    args = sys.argv[1:]
    if "--scattered-ids" in args:
        SCATTERED = True
        args.remove("--scattered-ids")
    change = None
    if "--change" in args:
        at = args.index("--change")
        change = float(args[at + 1])
        del args[at:at + 2]
    out, n = args[0], int(args[1])
    size = int(args[2]) if len(args) > 2 else 5000
    os.makedirs(out, exist_ok=True)
    accounts = max(1, n // 10)
    if change is None:
        write_accounts_and_contacts(out, n, accounts, size)

    def opportunity(i):
        contact = i % 2 == 0
        return {"name": f"Opportunity {i}", "description": None, "estimatedvalue": 25000.0 + i,
                "estimatedvalue_base": 25000.0 + i, **owner(i, n),
                "estimatedclosedate": "2025-06-30", "closeprobability": 40, "statecode": 0,
                "statecode" + FV: "Open", "stepname": "1-Qualify", "createdon": "2025-04-01T09:00:00Z",
                "modifiedon": "2025-05-02T14:03:11Z",
                "_customerid_value" + LT: "contact" if contact else "account",
                "_customerid_value": guid(2, i) if contact else guid(1, i % accounts),
                "_parentaccountid_value": None if contact else guid(1, i % accounts),
                "_parentcontactid_value": guid(2, i) if contact else None,
                "opportunityid": guid(3, i)}
    if change is not None:
        step = max(1, round(1 / change))
        def changed_opportunity(i):
            record = opportunity(i)
            record.update({"estimatedvalue": 99000.0 + i, "estimatedvalue_base": 99000.0 + i, "stepname": "2-Develop",
                           "modifiedon": "2025-06-01T08:00:00Z"})
            return record
        pages(out, "opportunities", (changed_opportunity(i) for i in range(0, n, step)), size)
        pages(out, "contacts", (contact(i, n, accounts, "Vice President", "2025-06-01T08:00:00Z")
                                for i in range(step // 2, n, step)), size)
        return
    pages(out, "opportunities", (opportunity(i) for i in range(n)), size)
    def connections():
        for i in range(n):
            a, b = guid(4, 2 * i), guid(4, 2 * i + 1)
            yield {"_record1id_value" + LT: "opportunity", "_record1id_value": guid(3, i), "record1objecttypecode": 3,
                   "_record1roleid_value": None, "_record2id_value" + LT: "contact", "_record2id_value": guid(2, (i + 1) % n),
                   "record2objecttypecode": 2, "_record2roleid_value": None, "_relatedconnectionid_value": b,
                   "ismaster": True, "statecode": 0, "connectionid": a}
            yield {"_record1id_value" + LT: "contact", "_record1id_value": guid(2, (i + 1) % n), "record1objecttypecode": 2,
                   "_record1roleid_value": None, "_record2id_value" + LT: "opportunity", "_record2id_value": guid(3, i),
                   "record2objecttypecode": 3, "_record2roleid_value": None, "_relatedconnectionid_value": a,
                   "ismaster": False, "statecode": 0, "connectionid": b}
    pages(out, "connections", connections(), size)


if __name__ == "__main__":
    main()
