"""Regenerate the bundled demo data (written by hand for curate; no third-party text).

    python examples/demo/make_demo.py

A support-ticket triage task: the user sends a ticket, the assistant answers with JSON
{"category", "priority", "summary"}. The files hold the defects real dumps have, which curate
should find, and which hurt a model trained on the data as it is:
train.jsonl   84 clean tickets (36 billing, 36 shipping, only 12 account; 22 intents, each in three
              wordings), plus
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
eval.jsonl    60 held-out tickets, a third of each category, with reference replies: the intents the
              training tickets have (each with one priority), each in a fourth wording that
              appears nowhere else (so decontamination finds only the one leaked copy)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
SYSTEM = "You triage customer support tickets. Reply with JSON only: category, priority, summary."

# Each kind of request (an intent) has one priority and three training wordings; the eval set asks for
# the same intents in a fourth wording that appears nowhere else (one eval ticket also leaked into
# train.jsonl), so a model has to recognise a request it knows in words it was not trained on.
# (wordings for training, the held-out eval wording, priority, summary)
BILLING_INTENTS = [
    (["I was charged twice for my {plan} subscription this month.",
      "My card shows two identical charges for the {plan} plan.",
      "You took the {plan} fee from my account two times in {month}."],
     "Two payments left my account for one {plan} renewal, please fix.", "high", "Double charge on {plan} subscription"),
    (["Can I get an invoice for my {plan} plan for {month}?",
      "Please email me the {month} invoice for my {plan} subscription.",
      "Where can I find the invoice for {month}?"],
     "I need a copy of the bill for {month} for my records.", "low", "Invoice request for {month}"),
    (["My card was declined when renewing the {plan} plan.",
      "The renewal of my {plan} plan failed, the card was refused.",
      "Payment for the {plan} plan did not go through, card declined."],
     "Your checkout keeps rejecting my card for the {plan} renewal.", "medium", "Card declined at {plan} renewal"),
    (["Please refund the {plan} upgrade, I clicked it by mistake.",
      "I upgraded to {plan} by accident and want my money back.",
      "Can you reverse the {plan} upgrade charge? It was a mistake."],
     "I did not mean to buy the {plan} upgrade, please refund it.", "medium", "Refund for accidental {plan} upgrade"),
    (["Why did my bill go up in {month}? I am on the {plan} plan.",
      "My {plan} bill for {month} is higher than usual, why?",
      "Can you explain why I paid more in {month}?"],
     "The {month} statement is bigger than last month, what changed?", "low", "Question about higher bill in {month}"),
    (["You billed me {amount} dollars but the {plan} plan costs less.",
      "I was charged {amount} dollars, which is more than the {plan} price.",
      "The charge of {amount} dollars is wrong, {plan} is cheaper."],
     "I paid {amount} dollars for {plan}, that is above your listed price.", "high", "Overbilled {amount} dollars on {plan}"),
    (["How do I switch from monthly to yearly billing on {plan}?",
      "Can I pay for {plan} once a year instead of every month?",
      "I want annual billing for my {plan} plan, how?"],
     "Is there a way to move my {plan} plan to a yearly payment?", "low", "Switch {plan} to yearly billing"),
    (["The discount code {code} was not applied to my invoice.",
      "My invoice ignores the code {code} I entered.",
      "I used {code} at checkout but got no discount."],
     "The promo code {code} did not reduce my price.", "medium", "Discount code {code} not applied"),
]
SHIPPING_INTENTS = [
    (["My order {order} has not arrived after {days} days.",
      "Order {order} is {days} days late and still not here.",
      "It has been {days} days and order {order} never came."],
     "I am still waiting for order {order}, it has been {days} days.", "high", "Order {order} late by {days} days"),
    (["The package for order {order} arrived damaged.",
      "Order {order} came with a crushed box and broken contents.",
      "My {product} from order {order} arrived broken."],
     "Everything in order {order} was smashed when it arrived.", "high", "Damaged package, order {order}"),
    (["Can I change the delivery address for order {order}?",
      "I moved, please send order {order} to my new address.",
      "Order {order} needs to go to a different address."],
     "Please update where order {order} is being delivered.", "medium", "Change address for order {order}"),
    (["Tracking for order {order} has not updated in {days} days.",
      "The tracking page for order {order} shows no movement.",
      "Order {order} tracking is stuck at the same step."],
     "No tracking updates on order {order} for {days} days now.", "medium", "Tracking stuck for order {order}"),
    (["I received the wrong item in order {order}.",
      "Order {order} contained a {product} I never ordered.",
      "You sent me the wrong product in order {order}."],
     "The parcel for order {order} had someone else's item in it.", "high", "Wrong item in order {order}"),
    (["Do you ship to {country}? I want to order a {product}.",
      "Can I get a {product} delivered to {country}?",
      "Is delivery to {country} possible?"],
     "Would you send a {product} to an address in {country}?", "low", "Shipping to {country} for {product}"),
    (["Half of order {order} is missing, only the {product} came.",
      "Order {order} arrived incomplete, items are missing.",
      "I only got part of order {order}."],
     "Some items from order {order} never showed up, only the {product}.", "high", "Partial delivery of order {order}"),
    (["Can I pick up order {order} at a store instead?",
      "Is in-store pickup possible for order {order}?",
      "I would rather collect order {order} from a shop."],
     "Could I collect order {order} myself at one of your stores?", "low", "Store pickup for order {order}"),
]
ACCOUNT_INTENTS = [
    (["I cannot log in, the password reset email never arrives.",
      "The password reset link is not coming to my inbox.",
      "I requested a password reset three times and got no email."],
     "No reset email shows up, so I am stuck outside my account.", "high", "Password reset email not received"),
    (["My account was locked after too many login attempts.",
      "I am locked out after entering the wrong password.",
      "The site blocked my account after failed sign-ins."],
     "After a few wrong passwords my account got blocked.", "high", "Account locked after failed logins"),
    (["How do I turn on two-factor authentication for my account?",
      "Where is the setting for two-step verification?",
      "I want to add 2FA to my login, how?"],
     "Can you tell me how to enable extra login security codes?", "low", "How to enable two-factor authentication"),
    (["I want to change the email address on my account to {email}.",
      "Please update my account email to {email}.",
      "My login email should now be {email}."],
     "Switch the email on my profile to {email}, please.", "medium", "Change account email to {email}"),
    (["Please delete my account and all my data.",
      "I want my account removed permanently.",
      "Close my account and erase my information."],
     "Remove my account and everything you store about me.", "medium", "Account deletion request"),
    (["Someone logged into my account from {city}, it was not me.",
      "I got an alert about a login from {city} that I did not make.",
      "There is a sign-in from {city} on my account, not mine."],
     "My account shows activity from {city}, I have never been there.", "high", "Suspicious login from {city}"),
]


def training_specs(intents: list) -> list[tuple[str, str, str]]:
    """(wording, priority, summary) of every training wording, the first wording of each intent first."""
    return [(w[k], pri, summ) for k in range(3) for w, _, pri, summ in intents]


def eval_specs(intents: list) -> list[tuple[str, str, str]]:
    return [(held_out, pri, summ) for _, held_out, pri, summ in intents]


BILLING, SHIPPING, ACCOUNT = map(training_specs, (BILLING_INTENTS, SHIPPING_INTENTS, ACCOUNT_INTENTS))
BILLING_EVAL, SHIPPING_EVAL, ACCOUNT_EVAL = map(eval_specs, (BILLING_INTENTS, SHIPPING_INTENTS, ACCOUNT_INTENTS))
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
