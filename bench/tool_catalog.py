"""A tool catalog and labelled queries made locally for the tool-selection benchmark.

Tools are every action x object pair (18 x 30 = 540), named ``action_object`` with a
one-line description, a JSON schema (the object's id, plus a parameter the action needs)
and one usage example, as tool catalogs register them. Queries say the same thing in
other words: the action and the object are replaced by synonyms and wrapped in one of
several request phrasings, two per tool (1,080), each labelled with its tool.

The usage example of a tool is its first action synonym followed by its first object
synonym, bare ("make bill"); queries always wrap their words in a request phrasing,
so no query equals or contains an example (``examples_disjoint`` checks it), though a
query may use the same synonyms as the example of its tool.
"""

from __future__ import annotations

import random
from typing import Any

ACTIONS: dict[str, tuple[str, list[str]]] = {
    "create": ("Create a new", ["make", "set up", "start a fresh", "open a new"]),
    "delete": ("Delete an existing", ["get rid of", "erase", "throw away"]),
    "list": ("List all of the user's", ["show me all", "give me every", "enumerate"]),
    "search": ("Search by keyword for a", ["look up", "hunt for", "locate"]),
    "update": ("Update the fields of a", ["change", "modify", "edit the details of"]),
    "export": ("Export to a file a", ["download", "save a local copy of"]),
    "share": ("Share with another person a", ["send", "forward", "pass along"]),
    "archive": ("Archive an old", ["put away", "file away", "stash"]),
    "restore": ("Restore a previously deleted", ["bring back", "recover", "undelete"]),
    "summarize": ("Summarize the content of a", ["give me the gist of", "recap"]),
    "translate": (
        "Translate into another language a",
        ["put into French", "render in Spanish"],
    ),
    "schedule": (
        "Schedule for a later date a",
        ["plan for next week", "set a date for"],
    ),
    "cancel": ("Cancel a pending", ["call off", "abort", "stop"]),
    "duplicate": ("Duplicate an existing", ["clone", "make a copy of"]),
    "rename": ("Rename a", ["give a new name to", "retitle"]),
    "count": ("Count the number of", ["tally up", "tell me how many"]),
    "compare": ("Compare two versions of a", ["contrast", "diff"]),
    "print": ("Print on paper a", ["get a paper copy of", "send to the printer"]),
}

OBJECTS: dict[str, tuple[str, list[str]]] = {
    "invoice": ("invoice billed to a customer", ["bill", "customer bill"]),
    "calendar_event": ("calendar event or meeting", ["appointment", "meeting slot"]),
    "email": ("email message", ["mail message", "e-mail"]),
    "flight": ("flight booking", ["plane ticket", "air travel booking"]),
    "hotel_booking": ("hotel room reservation", ["hotel stay", "room reservation"]),
    "weather_forecast": (
        "weather forecast for a city",
        ["weather outlook", "forecast"],
    ),
    "stock_quote": ("stock price quote", ["share price", "ticker price"]),
    "playlist": ("music playlist", ["song list", "music mix"]),
    "recipe": ("cooking recipe", ["dish instructions", "recipe for dinner"]),
    "support_ticket": (
        "customer support ticket",
        ["help desk request", "issue report"],
    ),
    "shipment": ("parcel shipment", ["package delivery", "parcel"]),
    "expense_report": ("expense report", ["expense claim", "reimbursement form"]),
    "meeting_room": ("meeting room reservation", ["conference room", "boardroom"]),
    "password": ("stored password", ["login secret", "credential"]),
    "backup": ("data backup", ["snapshot of my data", "saved copy of the disk"]),
    "user_account": ("user account", ["profile", "login account"]),
    "blog_post": ("blog post", ["article", "web post"]),
    "photo_album": ("photo album", ["picture collection", "set of photos"]),
    "task": ("to-do task", ["to-do item", "chore"]),
    "reminder": ("reminder notification", ["alert", "nudge"]),
    "contact": ("address book contact", ["phone contact", "person in my address book"]),
    "document": ("text document", ["doc", "written file"]),
    "payment": ("bank payment", ["money transfer", "wire"]),
    "order": ("online shop order", ["purchase", "web shop order"]),
    "note": ("personal note", ["memo", "jotting"]),
    "spreadsheet": ("spreadsheet", ["sheet of numbers", "workbook"]),
    "video_call": ("video call", ["video meeting", "zoom call"]),
    "subscription": ("paid subscription", ["membership", "monthly plan"]),
    "survey": ("survey form", ["questionnaire", "poll"]),
    "vacation_request": ("vacation request", ["time off request", "leave request"]),
}

#: the extra parameter each action takes (name, description)
ACTION_PARAMS: dict[str, tuple[str, str]] = {
    "create": ("title", "title of the new item"),
    "delete": ("confirm", "set to true to confirm the deletion"),
    "list": ("limit", "how many items at most"),
    "search": ("keyword", "words to look for"),
    "update": ("fields", "the fields to change and their values"),
    "export": ("file_format", "csv, pdf or json"),
    "share": ("recipient", "who receives it"),
    "archive": ("archive_folder", "where it is archived"),
    "restore": ("deleted_on", "when it was deleted"),
    "summarize": ("max_words", "length of the summary"),
    "translate": ("target_language", "language to translate into"),
    "schedule": ("date", "when it should happen"),
    "cancel": ("reason", "why it is cancelled"),
    "duplicate": ("copy_name", "name of the duplicate"),
    "rename": ("new_name", "the new name"),
    "count": ("filter", "which ones to count"),
    "compare": ("other_version", "the version to compare against"),
    "print": ("printer", "which printer to use"),
}

PHRASINGS = [
    "Could you {a} the {o} for me?",
    "I need to {a} my {o}.",
    "Please {a} the {o} from last week.",
    "Help me {a} a {o}",
    "can you {a} that {o} now",
    "I'd like to {a} the {o}, thanks",
]


def make_catalog() -> tuple[list[str], list[str]]:
    """Tool names and descriptions."""
    names, descs = [], []
    for action, (verb, _) in ACTIONS.items():
        for obj, (what, _) in OBJECTS.items():
            names.append(f"{action}_{obj}")
            descs.append(f"{verb} {what}.")
    return names, descs


def make_parameters() -> list[dict[str, Any]]:
    """Each tool's JSON schema, in catalog order."""
    out = []
    for action in ACTIONS:
        pname, pdesc = ACTION_PARAMS[action]
        for obj, (what, _) in OBJECTS.items():
            props = {
                f"{obj}_id": {"type": "string", "description": f"which {what}"},
                pname: {"type": "string", "description": pdesc},
            }
            out.append({"type": "object", "properties": props})
    return out


def make_examples() -> list[tuple[str, ...]]:
    """Each tool's usage examples, in catalog order (see the module doc)."""
    return [
        (f"{verbs[0]} {nouns[0]}",)
        for _, verbs in ACTIONS.values()
        for _, nouns in OBJECTS.values()
    ]


def examples_disjoint(queries: list[str], examples: list[tuple[str, ...]]) -> bool:
    """No query equals or contains (as words) any example phrase."""
    phrases = {" ".join(e.lower().split()) for ex in examples for e in ex}
    for q in queries:
        text = (
            " " + " ".join(q.lower().replace(",", " ").replace(".", " ").split()) + " "
        )
        if any(f" {p} " in text for p in phrases):
            return False
    return True


def make_queries(per_tool: int = 2, seed: int = 0) -> list[tuple[str, str]]:
    """``(query, tool name)`` pairs, ``per_tool`` paraphrases of each tool."""
    rng = random.Random(seed)
    out = []
    for action, (_, verbs) in ACTIONS.items():
        for obj, (_, nouns) in OBJECTS.items():
            for _ in range(per_tool):
                text = rng.choice(PHRASINGS).format(
                    a=rng.choice(verbs), o=rng.choice(nouns)
                )
                out.append((text, f"{action}_{obj}"))
    return out
