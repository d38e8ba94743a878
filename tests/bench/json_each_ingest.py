#!/usr/bin/env python3
"""Writes the statements that stage a folder of Web API pages with SQLite's own JSON functions,
as the baseline for `oppsync pull --fixtures` (issue 9, goal 5: stage within 1.2x of it).

usage: json_each_ingest.py PAGES_DIR > manifest.json; then:
       cargo run --release --example json_each_ingest -- DB manifest.json
(the example runs them with the SQLite oppsync bundles, each page's text bound as ?1; the
sqlite3 CLI of the machine may be older and much slower at JSON)

Per page, one transaction: every record's typed columns (GUIDs lower-cased), its raw text and
the bookkeeping columns, upserted by primary key, as stage.rs does; no validation, which is
what oppsync adds. Run it on a database `oppsync init` created, so both write the same schema.
"""
import json
import os
import sys

LT = "@Microsoft.Dynamics.CRM.lookuplogicalname"
FV = "@OData.Community.Display.V1.FormattedValue"

# entity set -> (table, key, [(column, json key, is_guid)])
SPECS = {
    "opportunities": ("opportunity", "opportunityid", [
        ("name", "name", False), ("description", "description", False),
        ("estimatedvalue", "estimatedvalue", False), ("actualvalue", "actualvalue", False),
        ("estimatedvalue_base", "estimatedvalue_base", False), ("actualvalue_base", "actualvalue_base", False),
        ("estimatedclosedate", "estimatedclosedate", False), ("actualclosedate", "actualclosedate", False),
        ("closeprobability", "closeprobability", False), ("statecode", "statecode", False),
        ("statuscode", "statuscode", False), ("stepname", "stepname", False),
        ("createdon", "createdon", False), ("modifiedon", "modifiedon", False),
        ("customerid", "_customerid_value", True), ("customerid_type", "_customerid_value" + LT, False),
        ("parentaccountid", "_parentaccountid_value", True), ("parentcontactid", "_parentcontactid_value", True),
        ("ownerid", "_ownerid_value", True), ("ownerid_type", "_ownerid_value" + LT, False),
        ("new_synctomkto", "new_synctomkto", False)]),
    "accounts": ("account", "accountid", [
        ("name", "name", False), ("websiteurl", "websiteurl", False),
        ("numberofemployees", "numberofemployees", False), ("revenue", "revenue", False),
        ("revenue_base", "revenue_base", False), ("industrycode", "industrycode", False),
        ("industrycode_label", "industrycode" + FV, False), ("telephone1", "telephone1", False),
        ("address1_line1", "address1_line1", False), ("address1_city", "address1_city", False),
        ("statecode", "statecode", False), ("modifiedon", "modifiedon", False),
        ("ownerid", "_ownerid_value", True), ("ownerid_type", "_ownerid_value" + LT, False),
        ("new_synctomkto", "new_synctomkto", False)]),
    "contacts": ("contact", "contactid", [
        ("firstname", "firstname", False), ("lastname", "lastname", False),
        ("fullname", "fullname", False), ("emailaddress1", "emailaddress1", False),
        ("jobtitle", "jobtitle", False), ("telephone1", "telephone1", False),
        ("parentcustomerid", "_parentcustomerid_value", True),
        ("parentcustomerid_type", "_parentcustomerid_value" + LT, False),
        ("statecode", "statecode", False), ("modifiedon", "modifiedon", False),
        ("ownerid", "_ownerid_value", True), ("ownerid_type", "_ownerid_value" + LT, False),
        ("new_synctomkto", "new_synctomkto", False)]),
    "connections": ("connection", "connectionid", [
        ("record1id", "_record1id_value", True), ("record1id_type", "_record1id_value" + LT, False),
        ("record1objecttypecode", "record1objecttypecode", False),
        ("record1roleid", "_record1roleid_value", True),
        ("record2id", "_record2id_value", True), ("record2id_type", "_record2id_value" + LT, False),
        ("record2objecttypecode", "record2objecttypecode", False),
        ("record2roleid", "_record2roleid_value", True),
        ("relatedconnectionid", "_relatedconnectionid_value", True),
        ("ismaster", "ismaster", False), ("statecode", "statecode", False),
        ("modifiedon", "modifiedon", False)]),
    "systemusers": ("systemuser", "systemuserid", [
        ("fullname", "fullname", False), ("firstname", "firstname", False),
        ("lastname", "lastname", False), ("internalemailaddress", "internalemailaddress", False),
        ("title", "title", False), ("mobilephone", "mobilephone", False),
        ("address1_telephone1", "address1_telephone1", False), ("isdisabled", "isdisabled", False),
        ("modifiedon", "modifiedon", False)]),
}


def main():
    folder = sys.argv[1]
    pages = []
    for name in sorted(os.listdir(folder)):
        entity_set = name.split("-")[0]
        table, key, columns = SPECS[entity_set]
        path = os.path.join(os.path.abspath(folder), name).replace("'", "''")
        extract = lambda k, guid: (f"lower(value ->> '$.\"{k}\"')" if guid else f"value ->> '$.\"{k}\"'")
        names = [key] + [c for c, _, _ in columns]
        values = [extract(key, True)] + [extract(k, g) for _, k, g in columns]
        updates = ", ".join(f"{c} = excluded.{c}" for c, _, _ in columns)
        pages.append({
            "page": path,
            "statements": [
                f"INSERT INTO {table} ({', '.join(names)}, raw, source_file, staged_run, seen_run) "
                f"SELECT {', '.join(values)}, value, '{path}', 1, 1 "
                f"FROM json_each(?1, '$.value') WHERE true "
                f"ON CONFLICT ({key}) DO UPDATE SET {updates}, raw = excluded.raw, "
                f"source_file = excluded.source_file, staged_run = excluded.staged_run, "
                f"seen_run = excluded.seen_run",
                f"INSERT INTO staged_page (run_id, source, entity_set, status, staged_at) "
                f"VALUES (1, '{path}', '{entity_set}', 'staged', 'now')",
            ],
        })
    json.dump(pages, sys.stdout)


if __name__ == "__main__":
    main()
