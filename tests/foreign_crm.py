"""A CRM unlike the demo, written as three exports: its own ("acme", with its mapping), HubSpot-
shaped and Salesforce-shaped CSV files (the presets' column names).

One seeded world: reps in their own users file under regional managers, accounts, contacts (a
third with a job title but no email or phone), leads whose conversion depends on webinars,
content downloads and pricing views, deals whose outcome depends on their stage path and
activity, and activities of types the demo never uses. Ids are strings such as ``acct_000123``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

AS_OF = pd.Timestamp("2026-06-30")
REGIONS = ("emea", "amer", "apac")
STAGES = ("sql", "demo_scheduled", "proposal_sent", "negotiation")
LEAD_TYPES = ("webinar", "content_download", "pricing_page_view", "linkedin_message", "page_view")


def world(seed: int = 3, n_leads: int = 500, n_accounts: int = 120) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    managers = pd.DataFrame(
        {"id": [f"rep_{i:03d}" for i in range(3)], "name": ["Mia Berg", "Ola Ruiz", "Kai Tan"],
         "region": list(REGIONS), "manager": [None] * 3}
    )  # fmt: skip
    reps = pd.DataFrame(
        {"id": [f"rep_{i:03d}" for i in range(3, 9)],
         "name": [f"Rep {i}" for i in range(3, 9)],
         "region": [REGIONS[i % 3] for i in range(6)],
         "manager": [f"rep_{i % 3:03d}" for i in range(6)]}
    )  # fmt: skip
    users = pd.concat([managers, reps], ignore_index=True)
    users["email"] = users["id"] + "@acme.example"
    rep_of = {r: reps.loc[reps["region"] == r, "id"].to_numpy() for r in REGIONS}

    accounts = pd.DataFrame({"id": [f"acct_{i:06d}" for i in range(1, n_accounts + 1)]})
    accounts["name"] = [f"Company {i}" for i in range(1, n_accounts + 1)]
    accounts["industry"] = rng.choice(["software", "retail", "finance", "logistics"], n_accounts)
    accounts["region"] = rng.choice(REGIONS, n_accounts)
    accounts["owner"] = [rng.choice(rep_of[r]) for r in accounts["region"]]
    accounts["created"] = AS_OF - pd.to_timedelta(rng.uniform(500, 800, n_accounts), unit="D")

    n = n_leads
    contacts = pd.DataFrame({"id": [f"ct_{i:06d}" for i in range(1, n + 1)]})
    contacts["account"] = rng.choice(accounts["id"], n)
    contacts["first"] = [f"First{i}" for i in range(n)]
    contacts["last"] = [f"Last{i}" for i in range(n)]
    reachable = rng.random(n) > 0.33
    contacts["email"] = np.where(reachable, [f"person{i}@mail.example" for i in range(n)], "")
    contacts["phone"] = ""
    contacts["title"] = rng.choice(["VP Sales", "Head of IT", "Analyst", "Engineer", "CEO"], n)
    region_of = accounts.set_index("id")["region"]
    contacts["region"] = region_of.loc[contacts["account"]].to_numpy()
    contacts["created"] = AS_OF - pd.to_timedelta(rng.uniform(400, 540, n), unit="D")

    leads = pd.DataFrame({"id": [f"lead_{i:06d}" for i in range(1, n + 1)]})
    leads["contact"] = contacts["id"]
    leads["account"] = contacts["account"]
    leads["region"] = contacts["region"]
    leads["source"] = rng.choice(["webinar", "paid_social", "partner"], n)
    leads["created"] = AS_OF - pd.to_timedelta(rng.uniform(100, 520, n), unit="D")
    # A fifth of new leads arrive unassigned: the import gives them a rep of their region.
    leads["owner"] = [rng.choice(rep_of[r]) if rng.random() > 0.2 else "" for r in leads["region"]]

    acts, engagement = [], np.zeros(n)
    for i in range(n):
        k = rng.poisson(3)
        types = rng.choice(LEAD_TYPES, k, p=[0.2, 0.2, 0.2, 0.2, 0.2])
        engagement[i] = sum(t in ("webinar", "content_download", "pricing_page_view") for t in types)  # fmt: skip
        for t in types:
            acts.append((leads.at[i, "id"], contacts.at[i, "id"], None, t,
                         leads.at[i, "created"] + pd.Timedelta(days=rng.uniform(0, 6))))  # fmt: skip
    p = 1 / (1 + np.exp(-(-2.2 + 0.9 * engagement + 0.8 * (leads["source"] == "webinar"))))
    converted = rng.random(n) < p
    leads["status"] = np.where(converted, "converted", rng.choice(["open", "working", "junk"], n))
    leads["converted"] = np.where(
        converted, leads["created"] + pd.to_timedelta(rng.uniform(10, 80, n), unit="D"), pd.NaT
    )

    won_leads = np.flatnonzero(converted)
    extra = rng.choice(n, 260 - len(won_leads), replace=True) if len(won_leads) < 260 else []
    deal_leads = np.concatenate([won_leads, extra]).astype(int)[:260]
    m = len(deal_leads)
    deals = pd.DataFrame({"id": [f"opp_{i:06d}" for i in range(1, m + 1)]})
    deals["lead"] = leads["id"].to_numpy()[deal_leads]
    deals["contact"] = contacts["id"].to_numpy()[deal_leads]
    deals["account"] = contacts["account"].to_numpy()[deal_leads]
    deals["owner"] = [rng.choice(rep_of[r]) for r in leads["region"].to_numpy()[deal_leads]]
    deals["amount"] = rng.lognormal(9.5, 0.8, m).round(2)
    deals["created"] = AS_OF - pd.to_timedelta(rng.uniform(60, 400, m), unit="D")
    reached = rng.integers(0, len(STAGES), m)
    deal_acts = rng.poisson(1 + 2 * reached)
    p_win = 1 / (1 + np.exp(-(-2.0 + 0.8 * reached + 0.15 * deal_acts)))
    closed = deals["created"] + pd.to_timedelta(rng.uniform(30, 90, m), unit="D") < AS_OF - pd.Timedelta(days=5)  # fmt: skip
    won = rng.random(m) < p_win
    deals["stage"] = np.where(closed, np.where(won, "won", "lost"), np.array(STAGES)[reached])
    deals["closed"] = np.where(closed, deals["created"] + pd.to_timedelta(rng.uniform(30, 90, m), unit="D"), pd.NaT)  # fmt: skip
    deals["close"] = deals["created"] + pd.Timedelta(days=60)
    history = []
    for i in range(m):
        for s in range(reached[i] + 1):
            history.append((deals.at[i, "id"], STAGES[s], deals.at[i, "created"] + pd.Timedelta(days=4 * s)))  # fmt: skip
        for _ in range(deal_acts[i]):
            acts.append((None, deals.at[i, "contact"], deals.at[i, "id"],
                         rng.choice(["call", "meeting", "demo_call"]),
                         deals.at[i, "created"] + pd.Timedelta(days=rng.uniform(0, 20))))  # fmt: skip
    activities = pd.DataFrame(acts, columns=["lead", "contact", "deal", "type", "at"])
    activities.insert(0, "id", [f"act_{i:07d}" for i in range(1, len(activities) + 1)])
    activities["responded"] = rng.random(len(activities)) < 0.4
    stage_history = pd.DataFrame(history, columns=["deal", "stage", "at"])
    return {
        "users": users, "accounts": accounts, "contacts": contacts, "leads": leads,
        "deals": deals, "deal_stage_history": stage_history, "activities": activities,
    }  # fmt: skip


ACME_MAPPING = """
name: acme
source: the Acme CRM's nightly CSV dump
timezone: Europe/Berlin
timestamp_format: "%d.%m.%Y %H:%M"
vocabulary:
  pipeline:
    name: acme_sales
    stages: [sql, demo_scheduled, proposal_sent, negotiation, won, lost]
    won: [won]
    lost: [lost]
  activity_categories:
    event: [webinar]
    content: [content_download]
    pricing: [pricing_page_view]
    message: [linkedin_message]
    visit: [page_view]
    call: [call]
    meeting: [meeting, demo_call]
entities:
  users:
    file: sales_reps.csv
    columns: {external_id: rep_code, name: full_name, email: mail, region: territory, manager_id: reports_to}
  accounts:
    file: companies.csv
    columns: {external_id: company_id, name: company, industry: sector, region: territory,
              owner_id: rep_code, created_at: created}
  contacts:
    file: people.csv
    columns: {external_id: person_id, account_id: company_id, first_name: given_name,
              last_name: family_name, email: email, phone: phone, role: job_title,
              region: territory, created_at: created}
    derive:
      is_decision_maker: {from: job_title, pattern: "(?i)^(vp|head|ceo|chief)", default: false}
  leads:
    file: prospects.csv
    columns: {external_id: prospect_id, contact_id: person_id, account_id: company_id,
              region: territory, source: channel, owner_id: rep_code, status: state,
              created_at: created, converted_at: converted}
    values:
      status: {open: new, working: working, converted: converted, junk: disqualified}
  deals:
    file: opportunities.csv
    columns: {external_id: opp_id, lead_id: prospect_id, contact_id: person_id,
              account_id: company_id, owner_id: rep_code, amount: value_eur, stage: phase,
              expected_close_at: expected_close, created_at: created, closed_at: closed}
  deal_stage_history:
    file: opportunity_phases.csv
    columns: {deal_id: opp_id, stage: phase, entered_at: entered}
  activities:
    file: touchpoints.csv
    columns: {external_id: touch_id, lead_id: prospect_id, contact_id: person_id,
              deal_id: opp_id, type: kind, occurred_at: happened, responded: answered}
"""


def _stamp(values: pd.Series, fmt: str) -> pd.Series:
    return pd.to_datetime(values).dt.strftime(fmt).fillna("")


def write_acme(world: dict[str, pd.DataFrame], out: Path) -> Path:
    """Acme's own export: its names, German timestamps in Berlin time, and its mapping file."""
    out.mkdir(parents=True, exist_ok=True)
    fmt = "%d.%m.%Y %H:%M"

    def local(v):  # stored as UTC wall times: written as Berlin wall times
        return _stamp(pd.to_datetime(v).dt.tz_localize("UTC").dt.tz_convert("Europe/Berlin").dt.tz_localize(None), fmt)  # fmt: skip

    w = world
    w["users"].rename(columns={"id": "rep_code", "name": "full_name", "email": "mail", "region": "territory", "manager": "reports_to"}).to_csv(out / "sales_reps.csv", index=False)  # fmt: skip
    a = w["accounts"]
    pd.DataFrame({"company_id": a["id"], "company": a["name"], "sector": a["industry"], "territory": a["region"], "rep_code": a["owner"], "created": local(a["created"])}).to_csv(out / "companies.csv", index=False)  # fmt: skip
    c = w["contacts"]
    pd.DataFrame({"person_id": c["id"], "company_id": c["account"], "given_name": c["first"], "family_name": c["last"], "email": c["email"], "phone": c["phone"], "job_title": c["title"], "territory": c["region"], "created": local(c["created"])}).to_csv(out / "people.csv", index=False)  # fmt: skip
    ld = w["leads"]
    pd.DataFrame({"prospect_id": ld["id"], "person_id": ld["contact"], "company_id": ld["account"], "territory": ld["region"], "channel": ld["source"], "rep_code": ld["owner"], "state": ld["status"], "created": local(ld["created"]), "converted": local(ld["converted"])}).to_csv(out / "prospects.csv", index=False)  # fmt: skip
    d = w["deals"]
    pd.DataFrame({"opp_id": d["id"], "prospect_id": d["lead"], "person_id": d["contact"], "company_id": d["account"], "rep_code": d["owner"], "value_eur": d["amount"], "phase": d["stage"], "expected_close": local(d["close"]), "created": local(d["created"]), "closed": local(d["closed"])}).to_csv(out / "opportunities.csv", index=False)  # fmt: skip
    h = w["deal_stage_history"]
    pd.DataFrame({"opp_id": h["deal"], "phase": h["stage"], "entered": local(h["at"])}).to_csv(out / "opportunity_phases.csv", index=False)  # fmt: skip
    t = w["activities"]
    pd.DataFrame({"touch_id": t["id"], "prospect_id": t["lead"], "person_id": t["contact"], "opp_id": t["deal"], "kind": t["type"], "happened": local(t["at"]), "answered": np.where(t["responded"], "ja", "nein")}).to_csv(out / "touchpoints.csv", index=False)  # fmt: skip
    mapping = out / "acme.yaml"
    # "ja"/"nein" are not booleans the importer knows: the mapping says so.
    mapping.write_text(ACME_MAPPING + "    values:\n      responded: {ja: true, nein: false}\n")
    return mapping


HUBSPOT_STAGES = {"sql": "Appointment Scheduled", "demo_scheduled": "Qualified To Buy",
                  "proposal_sent": "Presentation Scheduled", "negotiation": "Contract Sent",
                  "won": "Closed Won", "lost": "Closed Lost"}  # fmt: skip
SALESFORCE_STAGES = {"sql": "Qualification", "demo_scheduled": "Needs Analysis",
                     "proposal_sent": "Proposal/Price Quote", "negotiation": "Negotiation/Review",
                     "won": "Closed Won", "lost": "Closed Lost"}  # fmt: skip


def write_hubspot(world: dict[str, pd.DataFrame], out: Path) -> None:
    """Files as HubSpot record exports name them (the hubspot preset)."""
    out.mkdir(parents=True, exist_ok=True)
    iso = "%Y-%m-%d %H:%M"
    w = world
    u = w["users"]
    pd.DataFrame({"Owner ID": u["id"], "Name": u["name"], "Email": u["email"], "Team": u["region"], "Manager ID": u["manager"]}).to_csv(out / "owners.csv", index=False)  # fmt: skip
    a = w["accounts"]
    pd.DataFrame({"Record ID": a["id"], "Company name": a["name"], "Industry": a["industry"], "State/Region": a["region"], "Company owner": a["owner"], "Create Date": _stamp(a["created"], iso)}).to_csv(out / "companies.csv", index=False)  # fmt: skip
    c = w["contacts"]
    pd.DataFrame({"Record ID": c["id"], "First Name": c["first"], "Last Name": c["last"], "Email": c["email"], "Phone Number": c["phone"], "Job Title": c["title"], "State/Region": c["region"], "Associated Company IDs": c["account"], "Create Date": _stamp(c["created"], iso)}).to_csv(out / "contacts.csv", index=False)  # fmt: skip
    ld = w["leads"]
    status = ld["status"].map({"converted": "OPEN_DEAL", "open": "NEW", "working": "IN_PROGRESS", "junk": "UNQUALIFIED"})  # fmt: skip
    pd.DataFrame({"Record ID": ld["id"], "Associated Contact IDs": ld["contact"], "Associated Company IDs": ld["account"], "Lead Source": ld["source"], "State/Region": ld["region"], "Lead owner": ld["owner"], "Lead Status": status, "Create Date": _stamp(ld["created"], iso), "Became an Opportunity Date": _stamp(ld["converted"], iso)}).to_csv(out / "leads.csv", index=False)  # fmt: skip
    d = w["deals"]
    close = d["closed"].where(d["closed"].notna(), d["close"])
    pd.DataFrame({"Record ID": d["id"], "Deal Name": d["id"], "Amount": d["amount"], "Deal Stage": d["stage"].map(HUBSPOT_STAGES), "Close Date": _stamp(close, iso), "Create Date": _stamp(d["created"], iso), "Deal owner": d["owner"], "Associated Company IDs": d["account"], "Associated Contact IDs": d["contact"]}).to_csv(out / "deals.csv", index=False)  # fmt: skip
    t = w["activities"]
    kind = t["type"].map({"webinar": "WEBINAR", "content_download": "CONTENT_DOWNLOAD", "pricing_page_view": "PRICING_PAGE_VIEW", "linkedin_message": "LINKEDIN_MESSAGE", "page_view": "PAGE_VIEW", "call": "CALL", "meeting": "MEETING", "demo_call": "MEETING"})  # fmt: skip
    pd.DataFrame({"Record ID": t["id"], "Activity Type": kind, "Activity Date": _stamp(t["at"], iso), "Associated Contact IDs": t["contact"], "Associated Deal IDs": t["deal"], "Outcome": np.where(t["responded"], "connected", "no_answer")}).to_csv(out / "activities.csv", index=False)  # fmt: skip


def write_salesforce(world: dict[str, pd.DataFrame], out: Path) -> None:
    """Files as Salesforce's Data Export names them (the salesforce preset)."""
    out.mkdir(parents=True, exist_ok=True)
    iso = "%Y-%m-%dT%H:%M:%S.000Z"
    w = world
    u = w["users"]
    pd.DataFrame({"Id": u["id"], "Name": u["name"], "Email": u["email"], "Division": u["region"], "ManagerId": u["manager"]}).to_csv(out / "User.csv", index=False)  # fmt: skip
    a = w["accounts"]
    pd.DataFrame({"Id": a["id"], "Name": a["name"], "Industry": a["industry"], "BillingState": a["region"], "OwnerId": a["owner"], "CreatedDate": _stamp(a["created"], iso)}).to_csv(out / "Account.csv", index=False)  # fmt: skip
    c = w["contacts"]
    pd.DataFrame({"Id": c["id"], "AccountId": c["account"], "FirstName": c["first"], "LastName": c["last"], "Email": c["email"], "Phone": c["phone"], "Title": c["title"], "MailingState": c["region"], "CreatedDate": _stamp(c["created"], iso)}).to_csv(out / "Contact.csv", index=False)  # fmt: skip
    ld = w["leads"]
    status = ld["status"].map({"converted": "Closed - Converted", "open": "Open - Not Contacted", "working": "Working - Contacted", "junk": "Closed - Not Converted"})  # fmt: skip
    pd.DataFrame({"Id": ld["id"], "LeadSource": ld["source"], "State": ld["region"], "OwnerId": ld["owner"], "Status": status, "CreatedDate": _stamp(ld["created"], iso), "ConvertedDate": _stamp(ld["converted"], "%Y-%m-%d"), "ConvertedContactId": ld["contact"], "ConvertedAccountId": ld["account"]}).to_csv(out / "Lead.csv", index=False)  # fmt: skip
    d = w["deals"]
    close = d["closed"].where(d["closed"].notna(), d["close"])
    pd.DataFrame({"Id": d["id"], "AccountId": d["account"], "OwnerId": d["owner"], "Name": d["id"], "Amount": d["amount"], "StageName": d["stage"].map(SALESFORCE_STAGES), "CloseDate": _stamp(close, "%Y-%m-%d"), "CreatedDate": _stamp(d["created"], iso)}).to_csv(out / "Opportunity.csv", index=False)  # fmt: skip
    h = w["deal_stage_history"]
    pd.DataFrame({"OpportunityId": h["deal"], "StageName": h["stage"].map(SALESFORCE_STAGES), "CreatedDate": _stamp(h["at"], iso)}).to_csv(out / "OpportunityHistory.csv", index=False)  # fmt: skip
    t = w["activities"]
    # WhoId: the lead where there is one, else the contact; WhatId: the opportunity.
    who = t["lead"].where(t["lead"].notna(), t["contact"])
    kind = t["type"].map({"webinar": "Webinar", "content_download": "Content_Download", "pricing_page_view": "Pricing_Page_View", "linkedin_message": "Cadence", "page_view": "Web_Visit", "call": "Call", "meeting": "Event", "demo_call": "Event"})  # fmt: skip
    pd.DataFrame({"Id": t["id"], "WhoId": who, "WhatId": t["deal"], "TaskSubtype": kind, "ActivityDate": _stamp(t["at"], iso), "Status": np.where(t["responded"], "Completed", "Open")}).to_csv(out / "Task.csv", index=False)  # fmt: skip
