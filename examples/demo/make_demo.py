"""Regenerate the bundled demo data (written by hand for curate; no third-party text).

    python examples/demo/make_demo.py

A support-ticket triage task: the user sends a ticket, the assistant answers with JSON
{"category", "priority", "summary"}. The files are planted with what curate should find:
train.jsonl   seed data: billing and shipping tickets with exact duplicates (3 planted, more from
              templates with few slot values), 2 planted near duplicates,
              2 records that fail validation, 1 copy of an eval ticket (contamination)
production.jsonl  what users really send: billing, shipping and account/login tickets
              (account tickets are absent from train: the coverage gap)
eval.jsonl    held-out tickets with reference replies
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
SYSTEM = "You triage customer support tickets. Reply with JSON only: category, priority, summary."

BILLING = [
    ("I was charged twice for my {plan} subscription this month.", "high", "Double charge on {plan} subscription"),
    ("Can I get an invoice for my {plan} plan for {month}?", "low", "Invoice request for {month}"),
    ("My card was declined when renewing the {plan} plan.", "medium", "Card declined at {plan} renewal"),
    ("Please refund the {plan} upgrade, I clicked it by mistake.", "medium", "Refund for accidental {plan} upgrade"),
    ("Why did my bill go up in {month}? I am on the {plan} plan.", "low", "Question about higher bill in {month}"),
    ("You billed me {amount} dollars but the {plan} plan costs less.", "high", "Overbilled {amount} dollars on {plan}"),
    ("How do I switch from monthly to yearly billing on {plan}?", "low", "Switch {plan} to yearly billing"),
    ("The discount code {code} was not applied to my invoice.", "medium", "Discount code {code} not applied"),
]
SHIPPING = [
    ("My order {order} has not arrived after {days} days.", "high", "Order {order} late by {days} days"),
    ("The package for order {order} arrived damaged.", "high", "Damaged package, order {order}"),
    ("Can I change the delivery address for order {order}?", "medium", "Change address for order {order}"),
    ("Tracking for order {order} has not updated in {days} days.", "medium", "Tracking stuck for order {order}"),
    ("I received the wrong item in order {order}.", "high", "Wrong item in order {order}"),
    ("Do you ship to {country}? I want to order a {product}.", "low", "Shipping to {country} for {product}"),
    ("Half of order {order} is missing, only the {product} came.", "high", "Partial delivery of order {order}"),
    ("Can I pick up order {order} at a store instead?", "low", "Store pickup for order {order}"),
]
# Held-out wordings, used only in eval.jsonl (one eval ticket is also leaked into train.jsonl).
BILLING_EVAL = [
    ("Two payments left my account for one {plan} renewal, please fix.", "high", "Duplicate payment for {plan} renewal"),
    ("Where do I download last month's receipt?", "low", "Receipt download"),
]
SHIPPING_EVAL = [
    ("The courier marked order {order} delivered but nothing is at my door.", "high", "Order {order} marked delivered, not received"),
    ("Is express delivery available for a {product}?", "low", "Express delivery for {product}"),
]
ACCOUNT = [
    ("I cannot log in, the password reset email never arrives.", "high", "Password reset email not received"),
    ("My account was locked after too many login attempts.", "high", "Account locked after failed logins"),
    ("How do I turn on two-factor authentication for my account?", "low", "How to enable two-factor authentication"),
    ("I want to change the email address on my account to {email}.", "medium", "Change account email to {email}"),
    ("Please delete my account and all my data.", "medium", "Account deletion request"),
    ("Someone logged into my account from {city}, it was not me.", "high", "Suspicious login from {city}"),
]
PLANS = ["Basic", "Pro", "Team", "Enterprise"]
MONTHS = ["January", "February", "March", "April", "May", "June"]
CITIES = ["Lisbon", "Oslo", "Denver", "Nairobi", "Osaka"]
COUNTRIES = ["Canada", "Chile", "Japan", "Kenya", "Norway", "Portugal"]
PRODUCTS = ["desk lamp", "kettle", "backpack", "monitor stand", "yoga mat", "coffee grinder"]


def slot_values(rng: random.Random) -> dict[str, str]:
    return {
        "plan": rng.choice(PLANS),
        "month": rng.choice(MONTHS),
        "order": f"#{rng.randint(10000, 99999)}",
        "days": str(rng.randint(4, 21)),
        "email": f"user{rng.randint(1, 999)}@example.com",
        "city": rng.choice(CITIES),
        "country": rng.choice(COUNTRIES),
        "product": rng.choice(PRODUCTS),
        "amount": str(rng.randint(20, 400)),
        "code": f"SAVE{rng.randint(5, 50)}",
    }


def ticket(category: str, spec: tuple[str, str, str], rng: random.Random) -> dict:
    prompt, priority, summary = spec
    v = slot_values(rng)
    reply = {"category": category, "priority": priority, "summary": summary.format(**v)}
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": prompt.format(**v)},
            {"role": "assistant", "content": json.dumps(reply)},
        ]
    }


def batch(n: int, kinds: list[tuple[str, list]], rng: random.Random) -> list[dict]:
    out = []
    for i in range(n):
        category, specs = kinds[i % len(kinds)]
        out.append(ticket(category, specs[(i // len(kinds)) % len(specs)], rng))
    return out


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def main() -> None:
    rng = random.Random(7)
    train = batch(60, [("billing", BILLING), ("shipping", SHIPPING)], rng)
    production = batch(150, [("billing", BILLING), ("shipping", SHIPPING), ("account", ACCOUNT)], rng)
    evaluation = batch(12, [("billing", BILLING_EVAL), ("shipping", SHIPPING_EVAL), ("account", ACCOUNT)], rng)

    train += [json.loads(json.dumps(train[i])) for i in (0, 5, 9)]  # exact duplicates
    for i in (2, 7):  # near duplicates: same ticket, a word added
        near = json.loads(json.dumps(train[i]))
        near["messages"][1]["content"] = near["messages"][1]["content"].replace(".", " please.", 1)
        train.append(near)
    prose = json.loads(json.dumps(train[3]))
    prose["messages"][2]["content"] = "This looks like a billing issue, high priority."  # not JSON
    train.append(prose)
    train.append({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hello?"}]})
    train.append(json.loads(json.dumps(evaluation[1])))  # an eval ticket leaked into training
    rng.shuffle(train)

    write_jsonl(HERE / "train.jsonl", train)
    write_jsonl(HERE / "production.jsonl", [{"messages": r["messages"][:2]} for r in production])
    write_jsonl(HERE / "eval.jsonl", evaluation)


if __name__ == "__main__":
    main()
