"""A grammar of voice-assistant commands, growing over corpus generations g0..g5.

Each intent holds templates. Template syntax:
  `{slot}`     a value of a lexicon slot (see `lexicon.SLOT_VALUES`) or a built-in slot
               (`BUILTIN_SLOTS`: spelled-out numbers, durations, times, dates, ...);
  `(a|b|c)`    one alternative, chosen uniformly;
  `[words]`    optional words, present with probability 1/2.
Slots may sit inside groups; groups do not nest. Every produced sentence is already in
normalized form (`amnet.data.text.normalize_text`).

Generations: g0 holds the base domains. Generation k >= 1 adds intents (new domains) and new slot
values (new entities and words). `sample(rng, k, fresh=True)` draws a sentence that is *new in
generation k*: either from an intent introduced at k, or from an older template filled with at
least one slot value introduced at k. `fresh=False` draws a replay sentence from the content of
a uniformly chosen earlier generation.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable

import numpy as np

from amnet.data.corpus.lexicon import SLOT_VALUES

NUM_GENERATIONS = len(SLOT_VALUES)

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                  "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
MONTHS = ("january february march april may june july august september october november "
          "december").split()
WEEKDAYS = "monday tuesday wednesday thursday friday saturday sunday".split()


def number_to_words(n: int) -> str:
    """Spells 0 <= n < 10**9 in English words ("one hundred and five" style without "and")."""
    if not 0 <= n < 10**9:
        raise ValueError(f"number out of range: {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for scale, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if n >= scale:
            head = number_to_words(n // scale) + " " + name
            return head if n % scale == 0 else head + " " + number_to_words(n % scale)
    raise AssertionError("unreachable")


def ordinal_words(n: int) -> str:
    """Spelled ordinal: 1 -> "first", 23 -> "twenty third"."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def _duration(rng: np.random.Generator) -> str:
    unit = _pick(rng, ("seconds", "minutes", "minutes", "hours"))
    amount = int(rng.integers(2, 100 if unit != "hours" else 13))
    if rng.random() < 0.15:
        return _pick(rng, ("one minute", "one hour", "half an hour", "an hour and a half",
                           "ninety seconds", "a quarter of an hour"))
    return f"{number_to_words(amount)} {unit}"


def _clock_time(rng: np.random.Generator) -> str:
    hour = int(rng.integers(1, 13))
    minute = int(rng.choice([0, 0, 5, 10, 15, 20, 25, 30, 30, 40, 45, 50, 55]))
    style = rng.random()
    if style < 0.1:
        return _pick(rng, ("noon", "midnight"))
    if style < 0.25 and minute in (15, 30, 45):
        prefix = {15: "quarter past", 30: "half past", 45: "quarter to"}[minute]
        return f"{prefix} {number_to_words(hour if minute != 45 else hour % 12 + 1)}"
    minutes = ("" if minute == 0 else " oh " + number_to_words(minute) if minute < 10
               else " " + number_to_words(minute))
    suffix = _pick(rng, (" a m", " p m", " in the morning", " in the evening", "", " o'clock"))
    if suffix == " o'clock" and minute:
        suffix = ""
    return f"{number_to_words(hour)}{minutes}{suffix}"


def _date(rng: np.random.Generator) -> str:
    style = rng.random()
    if style < 0.3:
        return _pick(rng, ("today", "tomorrow", "the day after tomorrow", "this weekend",
                           "next week", "yesterday"))
    if style < 0.55:
        return _pick(rng, ("on ", "next ", "this ", "")) + _pick(rng, WEEKDAYS)
    day = ordinal_words(int(rng.integers(1, 29)))
    month = _pick(rng, MONTHS)
    return f"the {day} of {month}" if rng.random() < 0.5 else f"{month} {day}"


def _year(rng: np.random.Generator) -> str:
    year = int(rng.integers(1950, 2040))
    if year >= 2000 and rng.random() < 0.5:
        return number_to_words(year)
    return f"{number_to_words(year // 100)} {number_to_words(year % 100)}".replace(" zero", "")


BUILTIN_SLOTS: dict[str, Callable[[np.random.Generator], str]] = {
    "number": lambda rng: number_to_words(int(rng.integers(2, 200))),
    "big_number": lambda rng: number_to_words(int(rng.integers(100, 100_000))),
    "percent": lambda rng: number_to_words(int(rng.integers(1, 101))) + " percent",
    "duration": _duration,
    "time": _clock_time,
    "date": _date,
    "year": _year,
    "weekday": lambda rng: _pick(rng, WEEKDAYS),
    "month": lambda rng: _pick(rng, MONTHS),
    "ordinal": lambda rng: ordinal_words(int(rng.integers(1, 32))),
    "temperature": lambda rng: number_to_words(int(rng.integers(55, 86))) + " degrees",
    "small_number": lambda rng: number_to_words(int(rng.integers(2, 13))),
    "length_unit": lambda rng: _pick(rng, ("inches", "feet", "yards", "miles", "millimetres",
                                          "centimetres", "metres", "kilometres")),
    "weight_unit": lambda rng: _pick(rng, ("ounces", "pounds", "stone", "grams", "kilograms",
                                          "tons", "milligrams")),
    "volume_unit": lambda rng: _pick(rng, ("teaspoons", "tablespoons", "cups", "pints",
                                          "quarts", "gallons", "litres", "millilitres",
                                          "fluid ounces")),
    "temp_unit": lambda rng: _pick(rng, ("celsius", "fahrenheit", "kelvin")),
}


@functools.cache
def _builtin_vocabulary(draws: int = 5000) -> frozenset[str]:
    """Words of the built-in slots, collected from many seeded draws (their spaces are small)."""
    rng = np.random.default_rng(0)
    return frozenset(w for slot in BUILTIN_SLOTS.values() for _ in range(draws)
                     for w in slot(rng).split())


@dataclasses.dataclass(frozen=True)
class Intent:
    name: str
    generation: int
    templates: tuple[str, ...]


INTENTS: tuple[Intent, ...] = (
    # g0: base domains.
    Intent("timer", 0, (
        "[please ](set|start) a timer for {duration}",
        "(set|start) a {duration} timer[ please]",
        "how much time is left on my timer",
        "(cancel|stop|pause) the {duration} timer",
        "add {duration} to the timer",
        "timer {duration}",
    )),
    Intent("alarm", 0, (
        "(wake me up|set an alarm) at {time}",
        "set an alarm for {time} {date}",
        "(turn off|delete|cancel) my {time} alarm",
        "set a recurring alarm for {time} every {weekday}",
        "snooze the alarm for {duration}",
        "what alarms do i have (set|for) {date}",
    )),
    Intent("weather", 0, (
        "what's the weather [like ]in {city}",
        "what's the weather [like ]in {city} {date}",
        "will there be {weather_condition} in {city} {date}",
        "is it going to (rain|snow|be sunny) {date}",
        "how (hot|cold|warm) will it be in {city} {date}",
        "do i need an umbrella {date}",
        "what's the forecast for {city} this (week|weekend)",
        "will it be warmer than {temperature} {date}",
    )),
    Intent("music", 0, (
        "play [some ](music|songs) by {artist}",
        "play {genre} (music|songs|playlist)",
        "play something by {artist}",
        "shuffle my {genre} playlist",
        "who sings this song",
        "add this song to my {genre} playlist",
        "play the latest album (by|from) {artist}",
        "(skip|next|previous) (song|track)",
        "turn the volume (up|down) to {number}",
    )),
    Intent("call", 0, (
        "call {first_name} {surname}",
        "call {first_name}[ on speaker]",
        "(phone|ring|dial) {contact_relation}",
        "send a message to {first_name} saying i'll be late",
        "text {first_name} {surname} that i'm on my way",
        "video call {contact_relation}",
        "what's {first_name} {surname}'s phone number",
        "(call|text) {first_name} back",
    )),
    Intent("shopping_list", 0, (
        "add {grocery} to my shopping list",
        "add {grocery} and {grocery} to (my|the) shopping list",
        "(remove|delete) {grocery} from my shopping list",
        "put {small_number} (bags|packs|boxes|bottles) of {grocery} on the list",
        "what's on my shopping list",
        "do i have {grocery} on my list",
        "(order|buy) more {grocery}",
    )),
    Intent("smart_home", 0, (
        "turn (on|off) the {room} {device}",
        "turn (on|off) the {device}[ in the {room}]",
        "set the {room} {device} to {percent}",
        "set the thermostat to {temperature}",
        "dim the {room} lights to {percent}",
        "is the {room} {device} (on|off)",
        "(lock|unlock) the {room} door",
        "turn everything off in the {room}",
    )),
    Intent("sports_score", 0, (
        "what was the score of the {team} game",
        "did the {team} (win|lose) (last night|yesterday|on {weekday})",
        "when do the {team} play (next|again)",
        "who won the {team} game",
        "show me the {sport} scores",
        "what's the score between the {team} and the {team}",
        "is there a {sport} game on {date}",
    )),
    Intent("unit_conversion", 0, (
        "how many {length_unit} (are|is) in {number} {length_unit}",
        "convert {number} {weight_unit} to {weight_unit}",
        "what's {number} {volume_unit} in {volume_unit}",
        "convert {temperature} {temp_unit} to {temp_unit}",
        "how many {weight_unit} in a {weight_unit}",
        "what is {big_number} {length_unit} in {length_unit}",
    )),
    Intent("date_question", 0, (
        "what day is it (today|tomorrow)",
        "what's the date {date}",
        "how many days until {holiday}",
        "when is {holiday} (this year|next year|in {year})",
        "what day of the week is the {ordinal} of {month}",
        "is {date} a holiday",
        "how many weeks until {month}",
        "what day of the week was {month} {ordinal} {year}",
    )),
    Intent("reminder", 0, (
        "remind me to call {contact_relation} at {time}",
        "remind me to buy {grocery} {date}",
        "remind me about {first_name}'s birthday on the {ordinal} of {month}",
        "(create|set) a reminder for {time} {date}",
        "what are my reminders for {date}",
    )),
    # g1: the Olympics.
    Intent("olympics", 1, (
        "how many [gold ]medals has {athlete} won",
        "when is the {olympic_event}",
        "who won the {olympic_event}",
        "show me the medal table for {country}",
        "how many medals does {country} have",
        "is {athlete} competing {date}",
        "play the highlights of the {olympic_event}",
        "what was {athlete}'s time in the {olympic_event}",
        "when does {athlete} race (next|again)",
        "did {country} win a medal in the {olympic_event}",
    )),
    # g2: podcasts and more music.
    Intent("podcast", 2, (
        "play the latest episode of {podcast}",
        "subscribe to {podcast}",
        "resume {podcast}[ where i left off]",
        "play {podcast} at (double|one and a half times|normal) speed",
        "(skip|rewind) {number} seconds",
        "download the next {small_number} episodes of {podcast}",
        "play the {podcast} episode with {artist}",
    )),
    # g3: travel.
    Intent("travel", 3, (
        "is {airline} flight {big_number} on time",
        "(book|find) a flight (to|from) {city} {date}",
        "how do i get to the {landmark}",
        "how far is the {landmark} from here",
        "what time does the {landmark} open {date}",
        "find a hotel near the {landmark}",
        "check in for my {airline} flight",
        "what's the weather like at the {landmark}",
        "how long is the flight from {city} to {city}",
    )),
    # g4: cooking.
    Intent("cooking", 4, (
        "find a recipe for {dish}",
        "how do i make {dish}",
        "what can i use instead of {ingredient}",
        "how much {ingredient} goes in {dish}",
        "read the next step of the {dish} recipe",
        "add {ingredient} to my shopping list",
        "how long do i cook {dish} for",
        "set a {duration} timer for the {dish}",
        "convert {number} {volume_unit} of {ingredient} to grams",
    )),
    # g5: finance and fitness.
    Intent("finance", 5, (
        "what's the stock price of {company}",
        "how did {company} (stock|shares) do (today|this week|this year)",
        "compare {company} and {company}",
        "add {company} to my watchlist",
        "what's {company}'s market cap",
    )),
    Intent("fitness", 5, (
        "log {number} {exercise}",
        "start a {duration} workout of {exercise}",
        "how many {exercise} did i do {date}",
        "set a goal of {big_number} steps",
        "add {exercise} to my (morning|evening) routine",
    )),
)

_TOKEN = re.compile(r"\{(\w+)\}|\(([^()]*)\)|\[([^\[\]]*)\]|([^{}()\[\]]+)")


@dataclasses.dataclass(frozen=True)
class Template:
    intent: str
    text: str
    slots: frozenset[str]


def _slots_of(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\{(\w+)\}", text))


def _check_grammar() -> None:
    lexicon_slots = {slot for values in SLOT_VALUES.values() for slot in values}
    for intent in INTENTS:
        for text in intent.templates:
            unknown = _slots_of(text) - lexicon_slots - set(BUILTIN_SLOTS)
            if unknown:
                raise ValueError(f"intent {intent.name!r}: unknown slots {sorted(unknown)}")
            words = re.sub(r"\{\w+\}|[()\[\]|]", " ", text)
            if not re.fullmatch(r"[a-z' ]*", words):
                raise ValueError(f"intent {intent.name!r}: bad template syntax in {text!r}")


class Grammar:
    """Sentence sampler over the grammar of one corpus generation (see module docstring)."""

    def __init__(self, generation: int):
        if not 0 <= generation < NUM_GENERATIONS:
            raise ValueError(f"generation must be in [0, {NUM_GENERATIONS}), got {generation}")
        _check_grammar()
        self.generation = generation
        # Cumulative slot values up to each generation, and the ones new at each generation.
        self._new = [dict(SLOT_VALUES[g]) for g in range(NUM_GENERATIONS)]
        self._upto: list[dict[str, tuple[str, ...]]] = []
        acc: dict[str, tuple[str, ...]] = {}
        for g in range(NUM_GENERATIONS):
            acc = {s: acc.get(s, ()) + self._new[g].get(s, ()) for s in acc.keys() | self._new[g]}
            self._upto.append(acc)
        self._fresh = [self._fresh_templates(g) for g in range(NUM_GENERATIONS)]

    def _fresh_templates(self, g: int) -> list[Template]:
        fresh = []
        for intent in INTENTS:
            for text in intent.templates:
                slots = _slots_of(text)
                if intent.generation == g or (intent.generation < g and slots & set(self._new[g])):
                    fresh.append(Template(intent.name, text, slots))
        return fresh

    def vocabulary(self) -> set[str]:
        """All words this generation's grammar can produce: template words, slot values (and
        their possessives where a template has `{slot}'s`), and built-in slot words."""
        words = set(_builtin_vocabulary())
        pools = self._upto[self.generation]
        for intent in INTENTS:
            if intent.generation > self.generation:
                continue
            for text in intent.templates:
                words.update(re.sub(r"\{\w+\}'s|\{\w+\}|[()\[\]|]", " ", text).split())
                for slot in _slots_of(text) & set(pools):
                    words.update(w for v in pools[slot] for w in v.split())
                    if f"{{{slot}}}'s" in text:
                        words.update(v.split()[-1] + "'s" for v in pools[slot])
        return words

    def new_words(self) -> set[str]:
        """Words this generation's grammar can produce and the previous one cannot (g0: none):
        the words an update to this generation has to teach."""
        if self.generation == 0:
            return set()
        return self.vocabulary() - Grammar(self.generation - 1).vocabulary()

    def sample(self, rng: np.random.Generator, *, fresh: bool = True) -> tuple[str, str]:
        """Returns `(sentence, intent_name)`; `fresh=False` replays an earlier generation."""
        g = self.generation
        if not fresh:
            if g == 0:
                raise ValueError("generation 0 has no earlier generation to replay")
            g = int(rng.integers(g))
        template = _pick(rng, self._fresh[g])
        forced = set(self._new[g]) & template.slots if g > 0 else set()
        return self._expand(rng, template, g, forced), template.intent

    def _expand(self, rng: np.random.Generator, template: Template, g: int,
                forced: set[str]) -> str:
        # At least one slot with generation-g values is filled from the new values only.
        force = _pick(rng, sorted(forced)) if forced else None
        return " ".join(self._fill(rng, template.text, g, force).split())

    def _fill(self, rng: np.random.Generator, text: str, g: int, force: str | None) -> str:
        parts = []
        for slot, alternatives, optional, literal in _TOKEN.findall(text):
            if slot:
                if slot in BUILTIN_SLOTS:
                    parts.append(BUILTIN_SLOTS[slot](rng))
                else:
                    pool = self._new[g][slot] if slot == force else self._upto[g][slot]
                    parts.append(_pick(rng, pool))
            elif alternatives:
                parts.append(self._fill(rng, _pick(rng, alternatives.split("|")), g, force))
            elif optional:
                keep = rng.random() < 0.5 or f"{{{force}}}" in optional  # never drop new content
                parts.append(self._fill(rng, optional, g, force) if keep else "")
            else:
                parts.append(literal)
        return "".join(parts)
