"""Regenerate the bundled demo data (written by hand for curate; no third-party text).

    python examples/demo/make_demo.py

A support-ticket triage task: the user sends a ticket, the assistant answers with JSON
{"category", "priority", "summary"}. The files hold the defects real dumps have, which curate
should find, and which hurt a model trained on the data as it is:
train.jsonl   84 clean tickets (36 billing, 36 shipping, only 12 account), plus
              - a re-run export job that appended 120 more copies of 6 shipping tickets (exact
                duplicates, and a few with a word changed): a model trained on them answers
                "shipping" too often;
              - 20 replies from another tool, wrapped in a ``` fence or behind a sentence of prose:
                a model trained on them sometimes answers in a form a parser rejects;
              - 60 tickets exported from the help desk used before a migration, labelled in its
                own names (payments, delivery; urgent, normal, low): a model trained on them
                answers with labels the task does not have;
              - a prose-only reply, a record with no reply, and a copy of an eval ticket
production.jsonl  what users really send: a third each of billing, shipping and account tickets
              (account tickets are under-represented in train: the coverage gap)
eval.jsonl    60 held-out tickets, a third of each category, with reference replies, in wordings
              that appear nowhere else (so decontamination finds only the one leaked copy)
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
# Held-out wordings, used only in eval.jsonl (one eval ticket is also leaked into train.jsonl): a model
# has to carry the category and priority over to words it was not trained on.
BILLING_EVAL = [
    ("Two payments left my account for one {plan} renewal, please fix.", "high", "Duplicate payment for {plan} renewal"),
    ("Where do I download last month's receipt?", "low", "Receipt download"),
    ("My credit card statement shows a {plan} charge I never made.", "high", "Unknown {plan} charge on card"),
    ("Can you explain the tax line on my latest invoice?", "low", "Question about invoice tax"),
    ("I cancelled the {plan} plan but was still billed in {month}.", "high", "Billed after cancelling {plan}"),
    ("Is there a student discount on the {plan} subscription?", "low", "Student discount on {plan}"),
    ("The payment failed but my bank says the money left.", "medium", "Failed payment, money debited"),
    ("Please send a corrected invoice with my company name.", "medium", "Corrected invoice with company name"),
]
SHIPPING_EVAL = [
    ("The courier marked order {order} delivered but nothing is at my door.", "high", "Order {order} marked delivered, not received"),
    ("Is express delivery available for a {product}?", "low", "Express delivery for {product}"),
    ("Order {order} shipped to my old address, can you redirect it?", "medium", "Redirect order {order}"),
    ("How long does delivery to {country} usually take?", "low", "Delivery time to {country}"),
    ("The box for order {order} was open and the {product} is missing.", "high", "{product} missing from order {order}"),
    ("Can you split order {order} into two shipments?", "low", "Split order {order}"),
    ("My {product} from order {order} came broken in the parcel.", "high", "Broken {product} in order {order}"),
    ("The delivery driver left order {order} with a neighbour I don't know.", "medium", "Order {order} left with neighbour"),
]
ACCOUNT = [
    ("I cannot log in, the password reset email never arrives.", "high", "Password reset email not received"),
    ("My account was locked after too many login attempts.", "high", "Account locked after failed logins"),
    ("How do I turn on two-factor authentication for my account?", "low", "How to enable two-factor authentication"),
    ("I want to change the email address on my account to {email}.", "medium", "Change account email to {email}"),
    ("Please delete my account and all my data.", "medium", "Account deletion request"),
    ("Someone logged into my account from {city}, it was not me.", "high", "Suspicious login from {city}"),
]
ACCOUNT_EVAL = [
    ("I am not getting the verification code to sign in.", "high", "Verification code not received"),
    ("How can I rename my username?", "low", "Rename username"),
    ("My profile shows someone else's name, I think I was hacked.", "high", "Profile changed, possible hack"),
    ("I forgot which email I used to register.", "medium", "Forgotten registration email"),
    ("Please close my profile, I no longer use the service.", "medium", "Close profile"),
    ("Can I add a second person to my login?", "low", "Add a second user to login"),
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


def wrapped(record: dict, k: int) -> dict:
    """The same ticket as another tool answered it: JSON in a ``` fence, or after a sentence of prose."""
    out = json.loads(json.dumps(record))
    reply = out["messages"][2]["content"]
    out["messages"][2]["content"] = (f"```json\n{reply}\n```" if k % 2 == 0 else f"Sure, here is the triage: {reply}")
    return out


OLD_DESK = {"billing": "payments", "shipping": "delivery", "high": "urgent", "medium": "normal", "low": "low"}


def old_desk(record: dict) -> dict:
    """The same ticket as the help desk used before the migration labelled it, in its own label names."""
    out = json.loads(json.dumps(record))
    reply = json.loads(out["messages"][2]["content"])
    reply["category"], reply["priority"] = OLD_DESK[reply["category"]], OLD_DESK[reply["priority"]]
    out["messages"][2]["content"] = json.dumps(reply)
    return out


def main() -> None:
    rng = random.Random(7)
    clean = batch(72, [("billing", BILLING), ("shipping", SHIPPING)], rng)
    clean += batch(12, [("account", ACCOUNT)], rng)
    production = batch(150, [("billing", BILLING), ("shipping", SHIPPING), ("account", ACCOUNT)], rng)
    evaluation = batch(60, [("billing", BILLING_EVAL), ("shipping", SHIPPING_EVAL), ("account", ACCOUNT_EVAL)], rng)

    train = list(clean)
    dump = [r for r in clean if json.loads(r["messages"][2]["content"])["category"] == "shipping"][:6]
    for i in range(120):  # the export job that ran again: copies of the same six shipping tickets
        copy = json.loads(json.dumps(dump[i % len(dump)]))
        if i % 10 == 9:  # ... a few with a word changed on the way
            copy["messages"][1]["content"] = copy["messages"][1]["content"].replace(".", " please.", 1)
        train.append(copy)
    other_tool = batch(20, [("billing", BILLING), ("shipping", SHIPPING)], rng)
    train += [wrapped(r, k) for k, r in enumerate(other_tool)]
    train += [old_desk(r) for r in batch(60, [("billing", BILLING), ("shipping", SHIPPING)], rng)]
    prose = json.loads(json.dumps(clean[3]))
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
