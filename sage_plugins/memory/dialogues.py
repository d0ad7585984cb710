"""A labelled multi-turn set made locally: dialogues whose last turn needs a fact
from the first one, after it has left the short-term window.

Each dialogue belongs to a user (users have several sessions, so their long-term
memory holds other facts too). Turn 1 states a fact ("I'm allergic to peanuts"),
the middle turns are small talk and other facts of the same user, and the last turn
asks about the first fact in other words ("Which food should I stay away from?").
The label is the first turn: recall@k asks whether it is among the k long-term items
recalled for the last turn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: category -> (fact templates, paraphrased questions, slot values)
FACTS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "pet": (
        ["My dog is called {v}.", "We named our puppy {v}."],
        [
            "What's the name of my dog?",
            "Remind me what my pup is called?",
            "How do we call our puppy?",
        ],
        ["Biscuit", "Rex", "Luna", "Pepper", "Milo", "Nala"],
    ),
    "allergy": (
        ["I'm allergic to {v}.", "{v} give me a bad allergic reaction."],
        [
            "Which food should I stay away from?",
            "What am I allergic to again?",
            "Is there something I can't eat because of an allergy?",
        ],
        ["peanuts", "shellfish", "strawberries", "sesame", "kiwis", "eggs"],
    ),
    "job": (
        ["I work as a {v}.", "My job: I'm a {v}."],
        [
            "What do I do for a living?",
            "Remind me of my profession?",
            "What is my occupation?",
        ],
        ["nurse", "plumber", "data analyst", "teacher", "architect", "chef"],
    ),
    "city": (
        ["I live in {v}.", "Home for me is {v}."],
        [
            "Which city do I live in?",
            "Where is my home town these days?",
            "Where do I reside?",
        ],
        ["Leeds", "Lyon", "Porto", "Osaka", "Denver", "Krakow"],
    ),
    "sibling": (
        ["My sister's name is {v}.", "I have a sister called {v}."],
        [
            "What is my sister called?",
            "Do you recall my sister's name?",
            "How is my sibling named?",
        ],
        ["Clara", "Maya", "Ingrid", "Sofia", "Hannah", "Zoe"],
    ),
    "birthday": (
        ["My birthday is on {v}.", "I was born on {v}."],
        [
            "When is my birthday?",
            "On what date do I celebrate turning a year older?",
            "When was I born?",
        ],
        ["March 3rd", "July 21st", "October 9th", "May 30th", "January 14th"],
    ),
    "car": (
        ["I drive a {v}.", "My car is a {v}."],
        [
            "What kind of car do I have?",
            "Which vehicle do I drive?",
            "What's the make of my car?",
        ],
        [
            "red Toyota Corolla",
            "blue Volvo estate",
            "Tesla Model 3",
            "old VW Golf",
            "Honda Civic",
        ],
    ),
    "sport": (
        ["On weekends I play {v}.", "I'm in a {v} club on Saturdays."],
        [
            "Which sport do I play on weekends?",
            "What game do I play on Saturdays?",
            "What is my weekend sport?",
        ],
        ["tennis", "basketball", "rugby", "volleyball", "badminton"],
    ),
    "language": (
        ["I'm learning {v}.", "I take {v} lessons twice a week."],
        [
            "Which language am I studying?",
            "What language lessons do I take?",
            "Which foreign language am I learning?",
        ],
        ["Japanese", "Portuguese", "Italian", "Korean", "Swahili"],
    ),
    "instrument": (
        ["I play the {v}.", "I've been practising the {v} for years."],
        [
            "What instrument do I play?",
            "Which musical instrument do I practise?",
            "What do I play in music?",
        ],
        ["cello", "trumpet", "violin", "drums", "piano"],
    ),
    "trip": (
        ["Next month I'm flying to {v}.", "I booked a holiday in {v} for next month."],
        [
            "Where am I travelling next month?",
            "What's my upcoming holiday destination?",
            "Which country is my next trip to?",
        ],
        ["Iceland", "Peru", "Vietnam", "Morocco", "New Zealand"],
    ),
    "diet": (
        ["I'm {v}.", "I keep a {v} diet."],
        [
            "What diet do I follow?",
            "Are there eating habits I keep?",
            "What kind of eater am I?",
        ],
        ["vegetarian", "vegan", "pescatarian", "gluten-free"],
    ),
}

SMALL_TALK = [
    "The weather has been lovely today.",
    "Can you suggest a good movie for tonight?",
    "I had a long day at work.",
    "What's a quick recipe for dinner?",
    "Tell me a fun fact about space.",
    "I'm thinking about redecorating the living room.",
    "How do I fix a squeaky door?",
    "Any tips for sleeping better?",
    "I just finished a great podcast episode.",
    "What should I read next?",
    "My phone battery drains so fast.",
    "Let's plan the week ahead.",
    "I need to buy a present for a friend.",
    "Is it going to rain tomorrow?",
    "Give me a motivating quote.",
]


@dataclass(frozen=True, slots=True)
class Dialogue:
    """One session: ``turns`` in order; the last asks about ``turns[0]``."""

    user: str
    session: str
    category: str
    turns: tuple[str, ...]


def make_dialogues(
    n: int, *, users: int = 20, middle: tuple[int, int] = (4, 7), seed: int = 0
) -> list[Dialogue]:
    """``n`` labelled dialogues over ``users`` users (deterministic for a seed)."""
    rng = random.Random(seed)
    cats = sorted(FACTS)
    out = []
    for i in range(n):
        user = f"user{i % users}"
        cat = rng.choice(cats)
        templates, questions, values = FACTS[cat]
        fact = rng.choice(templates).format(v=rng.choice(values))
        fact = fact[0].upper() + fact[1:]
        mid = []
        for _ in range(rng.randint(*middle)):
            if rng.random() < 0.4:  # another fact of this user: a distractor
                other = rng.choice([c for c in cats if c != cat])
                t, _, vs = FACTS[other]
                s = rng.choice(t).format(v=rng.choice(vs))
                mid.append(s[0].upper() + s[1:])
            else:
                mid.append(rng.choice(SMALL_TALK))
        turns = (fact, *mid, rng.choice(questions))
        out.append(Dialogue(user, f"s{i}", cat, turns))
    return out
