"""The fixed, entirely fictitious facts of the synthetic answering service: places, people, words.

IP addresses are in the documentation ranges (RFC 5737, RFC 3849), domains end in ``.example``,
and phone numbers are made up. Weights and rates are tuning, not data that reaches an event.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

ORG = "Northside Answering"
DEFAULT_START = datetime(2026, 11, 23, 6, 0, tzinfo=timezone(timedelta(hours=-5)))
SITES = {"Northside": "198.51.100", "Riverside": "203.0.113", "Lakeview": "192.0.2"}
APPS = {"answer-desk": "192.0.2.5", "sms-gateway": "192.0.2.6", "ehr-bridge": "192.0.2.7",
        "fax-server": "192.0.2.8"}
SHIFTS = ("day", "evening", "night")
MIN, HOUR = 60_000, 3_600_000
LEAD = 15 * MIN  # the next shift's logins are scheduled this long before it starts
# Episodes per hour, by local hour: busiest in the evening, when practices are closed.
RATE = (25, 25, 12, 12, 12, 12, 20, 20, 25, 25, 25, 25, 35, 25, 25, 25, 25, 45, 45, 45, 45, 45,
        25, 25)
KINDS = ("call", "voicemail", "sync", "provider", "review", "patient_request", "payer",
         "public_health", "legal", "duplicate", "denied", "snoop", "guessing")
DAY_CUM = list(itertools.accumulate((54, 4, 14, 3, 5, 4, 4, 1, 0.7, 1.2, 1.5, 0.6, 0.4)))
NIGHT_CUM = list(itertools.accumulate((48, 24, 5, 6, 1, 0.5, 0.5, 0.3, 0.2, 0.5, 1, 0.8, 0.6)))
RELAY = ("phone", "secure_sms", "encrypted_email", "fax", "sms", "email")
RELAY_WEIGHTS = (30, 38, 12, 13, 4, 3)
ENCRYPTED = {"secure_sms": True, "encrypted_email": True, "portal": True, "sms": False,
             "email": False}
PATIENT_PHI = ("name", "dob", "phone", "address", "condition")
MESSAGE_PHI = ("name", "callback_number", "symptoms", "message_text")
# The keys of ``data`` whose values are PHI (anything else in ``data`` is not).
PHI_KEYS = frozenset(PATIENT_PHI + MESSAGE_PHI + ("email",))

FIRST = (
    "Maria", "James", "Aisha", "Robert", "Linh", "Patricia", "Diego", "Jennifer", "Kwame", "Linda",
    "Mateo", "Susan", "Omar", "Karen", "Wei", "Nancy", "Ravi", "Deborah", "Tomasz", "Sandra",
    "Yusuf", "Brenda", "Andre", "Carmen", "Hiroshi", "Gloria", "Emeka", "Rosa", "Dmitri",
    "Fatima", "Connor", "Imani", "Luca", "Priya", "Samuel", "Ingrid", "Marcus", "Leila",
)
LAST = (
    "Alvarez", "Okafor", "Nguyen", "Kowalski", "Haddad", "Brennan", "Castillo", "Fitzgerald",
    "Mensah", "Lindqvist", "Romero", "Tanaka", "Delacroix", "Abernathy", "Petrov", "Osei",
    "Whitfield", "Santangelo", "Ivanova", "Gallagher", "Baptiste", "Moreno", "Harrington",
    "Achebe", "Valdivia", "Sorensen", "Quintero", "MacAllister", "Yamamoto", "Ferreira",
    "Donovan", "Oyelaran", "Kaminski", "Holloway", "Esposito", "Barrios", "Thornton", "Adeyemi",
)
STREETS = ("Linden Street", "Harbor View Road", "Maple Terrace", "Cedar Hollow Lane",
           "Wexford Avenue", "Quarry Hill Drive", "Beacon Court", "Old Mill Road",
           "Chestnut Place", "Riverbend Way", "Orchard Crescent", "Foundry Street")
TOWNS = (("Northside", "02134"), ("Riverside", "02451"), ("Lakeview", "01880"),
         ("Milltown", "02062"), ("East Harbor", "02128"))
AREAS = ("617", "781", "857", "339", "978")
CONDITIONS = ("type 2 diabetes mellitus", "congestive heart failure", "major depressive disorder",
              "pregnancy, third trimester", "chronic obstructive pulmonary disease",
              "recovering from knee replacement", "atrial fibrillation on warfarin",
              "moderate persistent asthma", "stage 3 chronic kidney disease",
              "HIV on antiretroviral therapy", "opioid use disorder in treatment",
              "generalized anxiety disorder", "sickle cell disease", "epilepsy on levetiracetam")
SYMPTOMS = ("fever of 102 that will not come down", "sharp chest pain when breathing in",
            "vomiting and unable to keep fluids down", "a rash spreading across the chest",
            "severe headache with blurred vision", "swelling and redness around the incision",
            "shortness of breath when lying flat", "blood sugar readings above 400",
            "contractions about ten minutes apart", "a persistent cough with green sputum",
            "dizziness and a racing heartbeat", "ear pain and a fever in the toddler",
            "thoughts of self-harm since the dose change", "black stools and stomach cramps")
WHEN = ("this morning", "last night", "about two hours ago", "yesterday afternoon",
        "over the weekend", "right after dinner")
MEDS = ("lisinopril 20 mg", "metformin 500 mg", "an albuterol inhaler", "sertraline 50 mg",
        "warfarin 5 mg", "buprenorphine 8 mg")
MESSAGES = (
    "{name} called to report {symptom} starting {when} and asks for a call back at {cb}.",
    "Caller {name} says {symptom} began {when}; please call {cb} before the office opens.",
    "{name} reports {symptom} since {when} and wants to know whether to go to the emergency "
    "room; best number is {cb}.",
    "The mother of {name} called: {symptom} since {when}, requests a nurse call back at {cb}.",
    "{name} needs a refill of {med} and mentions {symptom} since {when}; reachable at {cb}.",
    "{name} is calling about lab results and {symptom} that started {when}; call {cb} after 6.",
)
PROVIDERS = (("Dr. Amara Rivera", "Northside Pediatrics"),
             ("Dr. Jonah Whitcombe", "Harbor Internal Medicine"),
             ("Dr. Sofia Lindahl", "Riverside OB-GYN"),
             ("Dr. Kwabena Asante", "Harbor Internal Medicine"),
             ("Dr. Helen Marchetti", "Lakeview Family Practice"),
             ("Dr. Rafael Quiroga", "Northside Pediatrics"))
PAYERS = (("Blue Harbor Health Plan", "claims fax (617) 555-0177"),
          ("Commonwealth Mutual Health", "attachments fax (781) 555-0143"),
          ("Bay State Medicaid Office", "records fax (857) 555-0119"))
VENDORS = (("PageCo Legacy Paging", "pager relay"), ("TextRelay Inc.", "secure SMS relay"),
           ("FaxNow Cloud LLC", "cloud fax"), ("SecureMail Express", "encrypted e-mail"))
QA_VENDOR = ("CallQuality Partners LLC", "qa-intake@callquality.example", "business_associate")
HEALTH_DEPT = ("Harbor County Department of Public Health", "disease reporting fax (617) 555-0133",
               "public_health")
COURT = ("Harbor County Superior Court, Clerk of Records",
         "Harbor County Courthouse, 1 Pemberton Square, East Harbor, MA 02128", "court")
POLICE = ("East Harbor Police Department, Det. K. Moreau", "records unit fax (617) 555-0168",
          "law_enforcement")


