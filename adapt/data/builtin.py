"""Built-in, generated corpora so that the pipeline runs offline with no data files.

The only corpus today is ``reviews``: synthetic product reviews in four domains
(books, electronics, kitchen, movies) with a domain shift that is built in on
purpose, so that domain-adaptation methods have something to fix:

* every domain has its own products, aspects and sentiment expressions
  ("a page-turner", "rusted after one wash"), most of which never occur elsewhere;
* many words flip polarity across domains ("predictable" plot is bad, "predictable"
  results are good; a "heavy" pan is good, a "heavy" laptop is bad), so a model
  that learned them in one domain is actively misled in another;
* the cues shared by all domains (generic praise and complaints, negation,
  sarcasm) are rarer and often appear as the conceded half of a mixed review,
  so they are weak evidence on their own;
* about 3% of labelled ``train`` and ``test`` labels are flipped at random,
  like the noise of real user ratings.

Everything is generated from fixed per-(domain, split) seeds: the output is the
same on every run and machine, and no data file is committed. Bump ``VERSION``
whenever the output changes, because caches are keyed by it.

Recipes name a split as ``builtin:reviews/<split>`` and select a domain through
the ``domain`` column. ``python -m adapt.builtin_data --out DIR`` writes every split.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from adapt.core.fileio import atomic_write_text

VERSION = "v1"

NEGATIVE = "negative"
POSITIVE = "positive"


@dataclass(frozen=True)
class Cues:
    """Clauses of one kind, by the polarity they express.

    Clauses start in lower case and carry no final punctuation, so that the
    renderer can use them alone, after a connective ("but", "that said") or
    joined with "and". ``{item}`` is replaced by the product being reviewed and
    ``{person}`` by someone in the reviewer's life.
    """

    positive: tuple[str, ...]
    negative: tuple[str, ...]


@dataclass(frozen=True)
class ProductLine:
    """Products that share aspects (a blade, a non-stick surface, a screen).

    Product-line cues exist so that a knife review never complains about its
    motor: the vocabulary of a review stays coherent with its product.
    """

    items: tuple[str, ...]
    cues: Cues
    flips: Cues


_NONE = Cues(positive=(), negative=())


@dataclass(frozen=True)
class DomainSpec:
    """Everything that is specific to one domain."""

    name: str
    product_lines: tuple[ProductLine, ...]
    # Neutral sentences: they make reviews longer and domain-typed without
    # carrying any label signal.
    context: tuple[str, ...]
    # Sentiment expressions that only occur in this domain (on top of those
    # of the product line).
    cues: Cues
    # Expressions built on words whose polarity differs in other domains.
    flips: Cues
    verdicts: Cues
    titles: Cues


@dataclass(frozen=True)
class ReviewMix:
    """How much of each kind of evidence a review carries.

    These weights set the size of the shift: the more evidence comes from
    domain cues and polarity flips (instead of generic sentiment), the more
    accuracy a model trained on another domain loses.
    """

    domain_cue: float = 0.37
    flip: float = 0.28
    generic: float = 0.35
    # Probability that a review concedes one point of the opposite polarity
    # ("The screen is gorgeous, but ..."). Generic cues are preferred for the
    # concession so that shared sentiment words appear in both classes.
    mixed: float = 0.4
    concession_generic: float = 0.45
    title: float = 0.3
    verdict: float = 0.55
    verdict_generic: float = 0.5
    lowercase: float = 0.03
    exclaim: float = 0.12


@dataclass(frozen=True)
class CorpusSpec:
    """A generated corpus: domains, shared phrases, split sizes and noise."""

    name: str
    domains: dict[str, DomainSpec]
    generic: Cues
    concessions: Cues
    generic_verdicts: Cues
    generic_titles: Cues
    # Neutral sentences that fit any domain.
    filler: tuple[str, ...]
    people: tuple[str, ...]
    split_sizes: dict[str, int]
    # Fraction of labelled rows whose label is flipped (unlabelled rows are
    # not affected: their label is not stored).
    label_noise: float
    mix: ReviewMix
    min_words: int = 25
    max_words: int = 90


# --------------------------------------------------------------------------
# Phrase inventory. Kept as data so that the grammar below stays small.
# --------------------------------------------------------------------------

_BOOKS = DomainSpec(
    name="books",
    product_lines=(
        ProductLine(
            items=("book", "novel", "thriller", "mystery", "debut novel", "sequel",
                   "fantasy novel", "historical novel", "story"),
            cues=_NONE,
            flips=_NONE,
        ),
    ),
    context=(
        "I picked this up at the airport",
        "my book club chose this one for March",
        "I read it over a long weekend",
        "I listened to the first half on audio and read the rest",
        "{person} recommended it to me",
        "this is the third book in the series",
        "I had read two of the author's earlier novels",
        "I bought the paperback edition",
        "the story follows one family over three generations",
        "the {item} is set in a small coastal town in Maine",
        "it is told from two alternating points of view",
        "I started it on a Sunday afternoon",
        "I had seen the movie adaptation first",
        "the chapters alternate between the present day and the 1950s",
        "I read it for a literature class",
        "the author is a former journalist",
        "it is a little over three hundred pages",
        "I borrowed it from the library",
    ),
    cues=Cues(
        positive=(
            "it's a real page-turner",
            "I couldn't put it down",
            "I finished it in two sittings",
            "the characters felt like old friends by the end",
            "the prose is gorgeous",
            "the dialogue crackles",
            "I was hooked from the first chapter",
            "I've already ordered the sequel",
            "the world-building is rich and believable",
            "the last chapters had me in tears",
            "the author knows exactly how to end a chapter",
            "I kept rereading whole paragraphs just for the language",
            "I'll be thinking about these characters for weeks",
            "the narrator's voice is unforgettable",
            "every subplot pays off",
            "I missed my subway stop twice while reading it",
            "the research behind it really shows",
            "the author makes you care about every character",
            "I underlined half the {item}",
            "the author has a gift for character",
            "I read the last hundred pages in one go",
            "the chapter endings are impossible to resist",
        ),
        negative=(
            "I couldn't get past the first hundred pages",
            "the characters are cardboard cutouts",
            "I kept skimming whole chapters",
            "the dialogue is wooden",
            "I finally gave up at chapter twelve",
            "the author clearly ran out of ideas halfway through",
            "it reads like a first draft",
            "the editing is sloppy, with typos on nearly every page",
            "the ending just stops mid-scene",
            "I didn't care what happened to anyone",
            "the same backstory gets repeated in every chapter",
            "it put me to sleep every night",
            "the plot holes are big enough to drive a truck through",
            "it's padded with pointless subplots",
            "the main character is insufferable",
            "I had to force myself to finish it",
            "the prose is purple and overwritten",
            "it's been sitting on my nightstand half-read for months",
            "the romance subplot felt forced",
            "none of the characters ring true",
            "the narrator never stops talking about himself",
            "the author tells you everything and shows nothing",
        ),
    ),
    flips=Cues(
        positive=(
            "the plot is wonderfully unpredictable",
            "it kept me up all night",
            "it's a slow burn that pays off",
            "it's dark, and I mean that as a compliment",
            "the twist at the end floored me",
            "the story sticks with you long after the last page",
            "the writing is raw and honest",
            "it's disturbing in the best possible way",
            "it's a light, breezy read",
            "the short chapters fly by",
            "it's unsettling and I loved every minute of it",
            "the ending is unpredictable right up to the last page",
            "the twists keep coming",
            "it's dark and twisted and wonderful",
            "it's a quiet, tender story that gets under your skin",
            "the quiet moments are the best part",
            "it's light and funny without being silly",
        ),
        negative=(
            "the plot is completely predictable",
            "it's way too long, at least a hundred pages could go",
            "it's heavy going from start to finish",
            "the characters are flat",
            "the plot is simple to the point of being dull",
            "the plot is thin",
            "it's slow, nothing happens for the first half",
            "the writing is cold and distant",
            "the story is consistent to a fault, with no surprises",
            "the pacing is steady and even and never builds to anything",
            "it's long and heavy and I felt every page",
            "the villain is flat and predictable",
            "it's so simple it reads like a children's book",
        ),
    ),
    verdicts=Cues(
        positive=(
            "it's a must-read",
            "this one goes on my favourites shelf",
            "I'll be reading everything this author writes",
            "I'm recommending it to my whole book club",
            "it's the best {item} I've read this year",
        ),
        negative=(
            "skip this one and reread an old favourite",
            "I won't be reading the sequel",
            "I'm glad I borrowed it instead of buying it",
            "it's going straight to the donation box",
            "it's the weakest {item} I've read this year",
        ),
    ),
    titles=Cues(
        positive=("A true page-turner", "Couldn't put it down", "Unpredictable to the end",
                  "Kept me up all night", "A slow burn worth it", "Haunting"),
        negative=("Predictable", "Way too long", "Flat characters", "Couldn't finish it",
                  "Heavy going", "Put me to sleep"),
    ),
)

_KITCHEN = DomainSpec(
    name="kitchen",
    product_lines=(
        ProductLine(
            items=("pan", "skillet", "frying pan", "saucepan", "stockpot", "dutch oven", "wok"),
            cues=Cues(
                positive=(
                    "eggs slide right off",
                    "it heats evenly with no hot spots",
                    "it sears a steak beautifully",
                    "the non-stick surface is still perfect after months",
                    "it goes from stovetop to oven without a problem",
                    "it holds heat really well",
                    "the rivets are flush, so nothing gets trapped",
                ),
                negative=(
                    "the center scorches while the edges barely cook",
                    "the bottom is already scratched",
                    "it has a hot spot right in the middle",
                    "it wobbles on the burner",
                    "the non-stick wore off in a month",
                    "the rivets rusted",
                    "the lid rattles and lets all the steam out",
                ),
            ),
            flips=Cues(
                positive=(
                    "it sits perfectly flat on the stove",
                    "it heats slow and steady, perfect for sauces",
                    "the heat is even and consistent",
                    "it gets hot fast",
                    "the handle stays cold on the stove",
                    "it's heavy enough that it never slides around the burner",
                    "it browns onions the same way every time, totally predictable",
                ),
                negative=(
                    "food sticks to it, even with oil",
                    "the handle twists loose",
                    "the chicken was still raw in the middle",
                    "it burns everything",
                    "it turned dark and blotchy",
                    "the bottom is so thin it warps",
                    "the heat is unpredictable, one side scorches and the other stays raw",
                ),
            ),
        ),
        ProductLine(
            items=("knife", "chef's knife", "paring knife", "knife set", "santoku", "bread knife"),
            cues=Cues(
                positive=(
                    "it slices tomatoes paper thin",
                    "it holds an edge for months",
                    "the blade glides through onions",
                    "it feels balanced in the hand",
                    "it cuts through a squash without any effort",
                    "the blade is scary sharp out of the box",
                    "the handle is comfortable even for long prep sessions",
                ),
                negative=(
                    "the blade dulled after a week",
                    "it crushes tomatoes instead of slicing them",
                    "the tip snapped off",
                    "the blade rusted along the edge",
                    "the handle gave me blisters",
                    "it won't hold an edge",
                    "the blade came with a nick in it",
                ),
            ),
            flips=Cues(
                positive=(
                    "it stays sharp for a long, long time",
                    "it's heavy enough to do the work for you",
                    "the long blade handles a whole watermelon",
                    "every cut is predictable and clean",
                    "it's simple, no gimmicks, just a great edge",
                    "the handle stays cool and dry in the hand",
                ),
                negative=(
                    "the handle twists loose in your hand",
                    "it's so light it feels like a toy",
                    "food sticks to the blade",
                    "the blade turned dark with spots",
                    "the blade is thin and bends",
                    "it tears raw chicken instead of cutting it",
                ),
            ),
        ),
        ProductLine(
            items=("blender", "kettle", "toaster", "food processor", "stand mixer",
                   "coffee maker", "slow cooker"),
            cues=Cues(
                positive=(
                    "it crushes ice in seconds",
                    "the motor has plenty of power",
                    "it boils water in about three minutes",
                    "it makes smoothies without a single chunk",
                    "it kneads bread dough without straining",
                    "the controls are dead easy to figure out",
                    "the jar locks in place with a satisfying click",
                ),
                negative=(
                    "the motor burned out after a month",
                    "it leaves chunks of ice in every smoothie",
                    "it tripped the breaker twice",
                    "the carafe cracked",
                    "the toast comes out black on one side and pale on the other",
                    "it stopped heating after two weeks",
                    "the buttons stopped responding",
                ),
            ),
            flips=Cues(
                positive=(
                    "it's so quiet I can use it while the baby sleeps",
                    "it gets hot fast",
                    "the long cord reaches any outlet",
                    "it's simple, one dial and that's it",
                    "it cooks slow and steady, perfect for stews",
                    "the results are predictable, the same every time",
                    "it's heavy, so it doesn't walk across the counter",
                ),
                negative=(
                    "its humming kept me up all night",
                    "the cord is way too short",
                    "it's so loud we have to shout over it",
                    "the temperature is unpredictable",
                    "the timer is unpredictable, so everything burns",
                    "it burns everything",
                    "the beeping kept me up all night",
                ),
            ),
        ),
    ),
    context=(
        "I bought this to replace one I'd had for ten years",
        "we cook at home most nights",
        "I got it on sale around the holidays",
        "{person} does most of the cooking in our house",
        "we have a small apartment kitchen with very little counter space",
        "I was setting up my first kitchen",
        "the {item} was a wedding gift",
        "I compared a few brands before choosing this one",
        "we have an induction cooktop",
        "I mostly cook for two",
        "I make a big batch of soup every Sunday",
        "I use it almost every day",
        "it came in a plain brown box",
        "I hand wash most of my cookware",
        "we bake a lot in the winter",
    ),
    cues=Cues(
        positive=(
            "it cleans up in seconds",
            "it goes in the dishwasher and comes out looking new",
            "it looks great on the counter",
            "it feels built to last",
            "I've already bought a second one for {person}",
            "dinner prep takes half the time now",
            "it has made weeknight cooking so much easier",
            "the build quality is restaurant grade",
            "it still looks brand new after a year of daily use",
            "nothing has chipped, stained or rusted",
            "it's the first thing I reach for when I cook",
        ),
        negative=(
            "it rusted after one wash",
            "the finish started peeling within a month",
            "it warped the first time I used it",
            "it came out of the dishwasher covered in spots",
            "it leaks all over the counter",
            "the handle came loose after a few weeks",
            "it chipped in the first week",
            "the coating is flaking into our food",
            "it smells like melting plastic every time",
            "the lid doesn't fit properly",
            "it stained after one batch of tomato sauce",
        ),
    ),
    flips=Cues(
        positive=(
            "it's nice and heavy, it feels solid",
            "it gives predictable results every time",
            "it's simple to use and simple to clean",
            "it's plain and simple and it just works",
            "the results are predictable and consistent",
            "it's heavy in a good way",
        ),
        negative=(
            "it feels light and cheap",
            "it's thin and flimsy",
            "there's a disturbing chemical smell",
            "it's light as a feather and about as sturdy",
            "it turned dark after a few washes",
            "it's so light it slides around the counter",
        ),
    ),
    verdicts=Cues(
        positive=(
            "it has earned a permanent spot in my kitchen",
            "it's the best kitchen purchase I've made in years",
            "I'd buy this {item} again in a heartbeat",
            "my old one went straight into the recycling bin",
            "every kitchen should have one",
        ),
        negative=(
            "it went back in the box and back to the store",
            "stick with cast iron",
            "it's going in the trash",
            "buy a restaurant-supply {item} instead",
            "I'm back to using my old one",
        ),
    ),
    titles=Cues(
        positive=("Heavy and solid", "Predictable results every time", "Eggs slide right off",
                  "Built to last", "Simple and quiet"),
        negative=("Rusted after one wash", "Light and cheap", "Everything sticks",
                  "Warped on day one", "Burns everything"),
    ),
)

_ELECTRONICS = DomainSpec(
    name="electronics",
    product_lines=(
        ProductLine(
            items=("laptop", "tablet", "phone", "smartwatch", "e-reader", "2-in-1 laptop",
                   "Chromebook"),
            cues=Cues(
                positive=(
                    "the screen is bright and crisp",
                    "colours pop on the display",
                    "the keyboard is a joy to type on",
                    "the touchscreen is responsive",
                    "the camera takes sharp photos even indoors",
                    "it handles video calls without stuttering",
                    "the hinge feels sturdy",
                ),
                negative=(
                    "the screen is washed out",
                    "the touchscreen registers phantom taps",
                    "the trackpad is jumpy",
                    "a couple of keys stick",
                    "the camera is grainy",
                    "the hinge cracked",
                    "the screen flickers at low brightness",
                ),
            ),
            flips=Cues(
                positive=(
                    "it's light enough to carry all day",
                    "the fan is whisper quiet",
                    "it's thin and sleek",
                    "it stays cool even under load",
                    "it's so light I forget it's in my bag",
                    "it's quiet even when I'm gaming",
                    "it's thin enough to slide into any bag",
                    "it sits flat on the desk without wobbling",
                ),
                negative=(
                    "it's heavy, way too heavy to carry around",
                    "it runs hot",
                    "the fan noise kept me up all night",
                    "the screen is too dark even at full brightness",
                    "it gets hot enough to burn my lap",
                    "it heats up after ten minutes",
                    "it's bulky and heavy",
                    "it's slow, apps take forever to open",
                ),
            ),
        ),
        ProductLine(
            items=("headphones", "wireless earbuds", "bluetooth speaker",
                   "noise-cancelling headphones", "soundbar"),
            cues=Cues(
                positive=(
                    "the bass is deep without being muddy",
                    "noise cancelling blocks out the whole airplane",
                    "they're comfortable for hours",
                    "the mic sounds clear on calls",
                    "the sound is rich and detailed",
                    "the audio stays in sync with video",
                    "the app's equalizer actually makes a difference",
                ),
                negative=(
                    "the left channel keeps dropping",
                    "the sound is tinny",
                    "they hurt my ears after twenty minutes",
                    "the mic makes me sound like I'm underwater",
                    "there's a constant hiss",
                    "the audio lags behind the video",
                    "the volume buttons are impossible to find by touch",
                ),
            ),
            flips=Cues(
                positive=(
                    "they're so light I forget I'm wearing them",
                    "it gets loud enough to fill the whole room",
                    "the battery lasts a long time, a whole week of commuting",
                    "the case is small enough to fit in any pocket",
                    "the case is thin and slips into any pocket",
                    "the sound is dark and warm, just how I like it",
                ),
                negative=(
                    "they're heavy and my neck hurts after an hour",
                    "the sound cuts out",
                    "the raw sound is harsh and thin",
                    "they're so quiet I can barely hear them on the bus",
                    "the charging case heats up",
                    "the hiss kept me up all night",
                ),
            ),
        ),
    ),
    context=(
        "I use it mostly for work and some streaming",
        "I upgraded from a model that was five years old",
        "it replaced one that finally gave out",
        "I bought it for travel",
        "setup took about ten minutes",
        "I ordered the refurbished version to save some money",
        "{person} uses it for school",
        "I had read a lot of reviews before buying",
        "it came with a USB-C cable and a wall adapter",
        "I've had it for about three months now",
        "the box includes a quick-start guide and a charger",
        "I mostly use it on my commute",
        "I bought the {item} during a holiday sale",
        "I'm not a tech person",
        "I use it with a Windows PC and an Android phone",
    ),
    cues=Cues(
        positive=(
            "the battery easily lasts two days",
            "it charges from empty in under an hour",
            "the firmware updates actually fixed things",
            "bluetooth pairs instantly every time",
            "it connects to wifi without any drama",
            "support sent a replacement charger the next day",
            "it boots up in seconds",
            "no dead pixels, no lag, no glitches",
            "the build feels premium for the price",
            "the apps run smoothly",
            "the charger is compact and charges fast",
        ),
        negative=(
            "the battery died within a week",
            "the charger stopped working after a month",
            "it won't hold a charge anymore",
            "it drops the wifi connection constantly",
            "the screen cracked just sitting on my desk",
            "it freezes and needs a hard reset every day",
            "bluetooth keeps disconnecting",
            "the charging port is already loose",
            "support had me on hold for two hours",
            "it bricked itself after a firmware update",
            "it shipped with a dead pixel",
        ),
    ),
    flips=Cues(
        positive=(
            "setup is simple",
            "it runs for a long time on one charge",
            "the battery life is long, really long",
            "the battery drain is predictable, so I always know where I stand",
            "the charger stays cool",
            "it's simple to pair with everything",
        ),
        negative=(
            "it behaves in unpredictable ways",
            "it restarts at unpredictable times",
            "the battery life is short",
            "it drains the battery overnight",
            "the charger runs hot",
            "it's heavy for what it is",
        ),
    ),
    verdicts=Cues(
        positive=(
            "it's the best gadget I've bought all year",
            "it has completely replaced my old {item}",
            "it's worth the upgrade",
            "I'd buy this {item} again without hesitation",
            "it's the best tech purchase I've made in a while",
        ),
        negative=(
            "I'm sending it back for a refund",
            "wait for the next version",
            "it's now a very expensive paperweight",
            "buy the older model instead",
            "I'm back to my old {item}",
        ),
    ),
    titles=Cues(
        positive=("Battery lasts forever", "Light and fast", "Whisper quiet",
                  "Long battery life", "Crisp screen"),
        negative=("Battery died in a week", "Runs hot", "Heavy and slow",
                  "Unpredictable and buggy", "Charger broke"),
    ),
)

_MOVIES = DomainSpec(
    name="movies",
    product_lines=(
        ProductLine(
            items=("film", "movie", "thriller", "comedy", "drama", "sequel", "remake",
                   "war film", "horror movie"),
            cues=_NONE,
            flips=_NONE,
        ),
    ),
    context=(
        "we watched it on a Friday night",
        "I rented it on a whim",
        "I saw it in the theater on opening weekend",
        "I had read the book first",
        "it's the director's third feature",
        "the DVD includes a commentary track",
        "I watched it with {person}",
        "it runs about two hours",
        "it was on a lot of year-end lists",
        "I bought the Blu-ray edition",
        "it's based on a true story",
        "I went in knowing nothing about it",
        "the {item} was shot in Iceland",
        "I streamed it the week it came out",
        "the cast is mostly unknown actors",
    ),
    cues=Cues(
        positive=(
            "the acting is superb across the board",
            "the soundtrack gave me chills",
            "the cinematography is stunning",
            "the director knows exactly when to hold a shot",
            "the lead deserves every award she got",
            "I've watched it three times already",
            "the ensemble cast has real chemistry",
            "every frame looks like a painting",
            "the final scene is perfect",
            "the score is gorgeous",
            "I laughed until I cried",
            "the whole theater applauded at the end",
            "the script is sharp and funny",
            "the performances are outstanding",
        ),
        negative=(
            "the acting is wooden",
            "I checked my phone every ten minutes",
            "the CGI looks like a video game from 2005",
            "the dialogue made me cringe",
            "the director seems to have lost interest halfway through",
            "the editing is choppy and confusing",
            "we turned it off after forty minutes",
            "the jokes all land with a thud",
            "the lead has zero chemistry with anyone",
            "the sound mix buries the dialogue",
            "it's two hours I'll never get back",
            "the trailer showed all the good parts",
            "the shaky camera made me nauseous",
            "half the theater walked out",
        ),
    ),
    flips=Cues(
        positive=(
            "the plot is gloriously unpredictable",
            "the twist completely blindsided me",
            "it's dark and unsettling in the best way",
            "it's a slow burn that's worth the wait",
            "it sticks with you for days",
            "the performances are raw and fearless",
            "it's disturbing and brilliant",
            "it kept me up all night thinking about it",
            "it's heavy, emotional stuff and it hits hard",
            "it's a simple story, told beautifully",
            "the cold, clinical look suits the story perfectly",
            "the ending is unpredictable and earned",
            "it's dark, twisted and very funny",
            "the twist actually makes sense on a second viewing",
        ),
        negative=(
            "the plot is predictable from the first scene",
            "it's way too long, the runtime drags",
            "the soundtrack is quiet and flat",
            "the characters are paper thin",
            "it's preachy and lectures you for two hours",
            "it's so light it evaporates the moment it's over",
            "it's short and feels unfinished",
            "it's so short the ending feels rushed",
            "the pacing is slow and plodding",
            "the jump scares are loud and cheap",
            "it's long, slow and predictable",
            "the score is so quiet it might as well not be there",
            "the villain is flat",
        ),
    ),
    verdicts=Cues(
        positive=(
            "it's a must-see",
            "it's easily one of the best films of the year",
            "I'm buying the Blu-ray",
            "see it on the biggest screen you can",
            "I'll be watching this {item} again soon",
        ),
        negative=(
            "wait for it to hit streaming, or skip it entirely",
            "save yourself two hours",
            "it's one of the worst films I've seen this year",
            "it's not even worth a rental",
            "I won't be watching this {item} again",
        ),
    ),
    titles=Cues(
        positive=("Unpredictable and haunting", "Stunning soundtrack", "A dark gem",
                  "Blindsided by the twist", "Superb acting"),
        negative=("Predictable and long", "Wooden acting", "Two hours I'll never get back",
                  "Flat soundtrack", "Preachy"),
    ),
)

_GENERIC = Cues(
    positive=(
        "I'm really happy with it",
        "it does what it says",
        "it's not bad at all",
        "I was never disappointed",
        "I was pleasantly surprised",
        "it's worth every penny",
        "I'd buy it again",
        "it exceeded my expectations",
        "I can't complain",
        "it's better than I expected",
        "I'm glad I took a chance on it",
        "no regrets here",
        "I have nothing bad to say about it",
        "I keep recommending it",
    ),
    negative=(
        "I was disappointed",
        "it's not worth the money",
        "I wouldn't say it's great",
        "save your money",
        "it's nothing special",
        "what a letdown",
        "I expected a lot more",
        "I can't recommend it",
        "I really wanted to like it",
        "it just didn't work for me",
        "I should have read the reviews first",
        "great, just what I needed, another {item} I regret buying",
        "it's not as good as everyone says",
        "I can't say I enjoyed it",
        "it never lived up to the hype",
        "it's not something I'd buy again",
    ),
)

# Points a reviewer concedes before the one that decides the review: the
# positive ones occur in negative reviews and vice versa, in every domain.
_CONCESSIONS = Cues(
    positive=(
        "the price was right",
        "it looks nice enough",
        "shipping was fast",
        "it started out fine",
        "there are a few good moments",
        "I wanted to love it",
        "the reviews were glowing",
        "the first week was great",
        "the idea is good",
        "I liked it at first",
        "it's not the worst thing I've bought",
    ),
    negative=(
        "I had my doubts at first",
        "it's not perfect",
        "it took a while to grow on me",
        "the price is a bit steep",
        "the first impression wasn't great",
        "I almost returned it",
        "it has a couple of flaws",
        "it's not for everyone",
        "I nearly gave up on it early on",
        "a friend warned me off it",
    ),
)

_GENERIC_VERDICTS = Cues(
    positive=(
        "I'd give it four stars",
        "I'm happy with it",
        "it's a keeper",
        "I'd recommend it",
        "it's worth it",
        "I'm glad I bought it",
    ),
    negative=(
        "two stars, and that's generous",
        "it's not for me",
        "I wouldn't recommend it",
        "I wish I'd bought something else",
        "it's a pass",
        "I regret buying it",
    ),
)

_GENERIC_TITLES = Cues(
    positive=("Love it", "Five stars", "Better than expected", "Pleasantly surprised",
              "Not bad at all", "Worth it"),
    negative=("Disappointed", "Not what I expected", "Meh", "Don't bother",
              "Save your money", "What a letdown"),
)

_FILLER = (
    "I don't usually write reviews",
    "just my two cents",
    "it arrived on time",
    "the packaging was fine",
    "I'm writing this to help others decide",
    "for what it's worth, I paid full price",
    "I've had it for a few weeks now",
    "I went back and forth before buying it",
    "I'll update this review if anything changes",
    "it was a gift to myself",
)

_PEOPLE = (
    "my wife", "my husband", "my sister", "my brother", "a coworker", "my mom",
    "my dad", "a friend", "my neighbour", "my son", "my daughter", "my roommate",
)

_REVIEWS = CorpusSpec(
    name="reviews",
    domains={d.name: d for d in (_BOOKS, _ELECTRONICS, _KITCHEN, _MOVIES)},
    generic=_GENERIC,
    concessions=_CONCESSIONS,
    generic_verdicts=_GENERIC_VERDICTS,
    generic_titles=_GENERIC_TITLES,
    filler=_FILLER,
    people=_PEOPLE,
    split_sizes={"train": 1200, "test": 400, "unlabeled": 1500},
    label_noise=0.03,
    mix=ReviewMix(),
)

CORPORA: dict[str, CorpusSpec] = {"reviews": _REVIEWS}

# Unlabelled rows hide their label; it still decides the text.
_LABELLED_SPLITS = ("train", "test")


# --------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


class _ReviewWriter:
    """Writes one review of a given polarity from a corpus's phrase inventory."""

    # Connectives that introduce the point that decides the review after a
    # conceded point of the other polarity.
    _CONTRAST = (
        "{a}, but {b}",
        "{a}. But {b}",
        "{a}. That said, {b}",
        "{a}, however {b}",
        "sure, {a}, but {b}",
        "I'll admit {a}. Still, {b}",
        "{a}. Even so, {b}",
        "while {a}, {b}",
    )
    _SINGLE = ("{a}", "{a}", "{a}", "{a}", "honestly, {a}", "I have to say, {a}", "also, {a}",
               "to be honest, {a}")
    _VERDICT = ("overall, {a}", "bottom line: {a}", "{a}", "in short, {a}", "all in all, {a}",
                "so yeah, {a}")

    def __init__(self, corpus: CorpusSpec, domain: DomainSpec, rng: random.Random) -> None:
        self.corpus = corpus
        self.domain = domain
        self.rng = rng
        # Phrases and frames already used in the current review: nobody writes
        # the same sentence twice in a short review.
        self._used: set[str] = set()

    def write(self, positive: bool) -> str:
        for _ in range(50):
            text = self._attempt(positive)
            n_words = len(text.split())
            if self.corpus.min_words <= n_words <= self.corpus.max_words:
                return text
        raise RuntimeError("could not generate a review within the word limits")  # pragma: no cover

    def _attempt(self, positive: bool) -> str:
        rng, mix, corpus = self.rng, self.corpus.mix, self.corpus
        self._used.clear()
        line = rng.choice(self.domain.product_lines)
        item = rng.choice(line.items)
        sentences: list[str] = []
        if rng.random() < mix.title:
            titles = corpus.generic_titles if rng.random() < 0.4 else self.domain.titles
            title = self._fresh(titles.positive if positive else titles.negative)
            if rng.random() < 0.25:
                title = title.title()
            sentences.append(title + rng.choice((".", ".", "!", "!!", "...")))
        if rng.random() < 0.75:
            sentences.append(self._render(self._fresh(self.domain.context), "."))

        n_points = rng.choice((2, 2, 3, 3, 3, 4))
        points = [self._evidence(line, positive) for _ in range(n_points)]
        contrast_at = -1
        if rng.random() < mix.mixed:
            # A conceded point of the other polarity, immediately answered by
            # one that agrees with the label, so the review stays decided.
            if rng.random() < mix.concession_generic:
                concessions = corpus.concessions
                other = self._fresh(concessions.negative if positive else concessions.positive)
            else:
                other = self._evidence(line, not positive, allow_generic=False)
            contrast_at = rng.randrange(n_points)
            frame = self._fresh(self._CONTRAST)
            points[contrast_at] = frame.format(a=other, b=points[contrast_at])
        previous_joinable = False
        for i, point in enumerate(points):
            joinable = i != contrast_at
            if joinable and previous_joinable and rng.random() < 0.3:
                # Two points of the same polarity joined into one sentence.
                sentences[-1] = sentences[-1][:-1] + ", and " + self._fill(point) + "."
                previous_joinable = False
                continue
            frame = self._fresh(self._SINGLE) if joinable else "{a}"
            end = "!" if rng.random() < mix.exclaim else "."
            sentences.append(self._render(frame.format(a=point), end))
            previous_joinable = joinable
            if rng.random() < 0.15:
                filler = self._fresh(corpus.filler + self.domain.context)
                sentences.append(self._render(filler, "."))
                previous_joinable = False

        if rng.random() < mix.verdict:
            verdicts = (corpus.generic_verdicts if rng.random() < mix.verdict_generic
                        else self.domain.verdicts)
            verdict = self._fresh(verdicts.positive if positive else verdicts.negative)
            end = "!" if rng.random() < mix.exclaim * 2 else "."
            sentences.append(self._render(self._fresh(self._VERDICT).format(a=verdict), end))

        text = " ".join(sentences).replace("{item}", item)
        if rng.random() < mix.lowercase:
            # Some reviewers never press shift.
            text = text.lower()
        return text

    def _fresh(self, pool: Sequence[str]) -> str:
        """A phrase from ``pool`` not used yet in this review (if there is one)."""
        for _ in range(8):
            phrase = self.rng.choice(pool)
            if phrase not in self._used:
                break
        # Repeated frames such as "{a}" are fine; repeated phrases are rare.
        self._used.add(phrase)
        return phrase

    def _evidence(self, line: ProductLine, positive: bool, allow_generic: bool = True) -> str:
        rng, mix = self.rng, self.corpus.mix
        roll = rng.random() if allow_generic else mix.generic + rng.random() * (1 - mix.generic)
        if roll < mix.generic:
            generic = self.corpus.generic
            return self._fresh(generic.positive if positive else generic.negative)
        own, shared = (line.flips, self.domain.flips) if roll < mix.generic + mix.flip else (
            line.cues, self.domain.cues)
        # Uniform over the union, so a phrase's frequency does not depend on
        # how the pools happen to be split between product line and domain.
        return self._fresh((own.positive + shared.positive) if positive
                           else (own.negative + shared.negative))

    def _fill(self, clause: str) -> str:
        if "{person}" in clause:
            clause = clause.replace("{person}", self.rng.choice(self.corpus.people))
        return clause

    def _render(self, clause: str, end: str) -> str:
        return _capitalise(self._fill(clause)) + end


def _check_corpus(corpus: str) -> CorpusSpec:
    if corpus not in CORPORA:
        raise ValueError(f"unknown built-in corpus {corpus!r}; valid: {', '.join(sorted(CORPORA))}")
    return CORPORA[corpus]


def domains(corpus: str) -> tuple[str, ...]:
    """Names of the domains of a built-in corpus, in generation order."""
    return tuple(_check_corpus(corpus).domains)


def splits(corpus: str) -> tuple[str, ...]:
    """Names of the splits of a built-in corpus: ``("train", "test", "unlabeled")``."""
    return tuple(_check_corpus(corpus).split_sizes)


def _generate_domain(spec: CorpusSpec, domain: DomainSpec, split: str) -> list[dict]:
    # One seed per (corpus, domain, split): adding a domain or resizing one
    # split leaves every other (domain, split) unchanged. String seeds are
    # hashed with SHA-512 by `random`, so they do not depend on PYTHONHASHSEED.
    rng = random.Random(f"{spec.name}-{VERSION}-{domain.name}-{split}")
    size = spec.split_sizes[split]
    # Exactly balanced before noise; the noise keeps it within a few rows.
    truth = [i % 2 == 1 for i in range(size)]
    rng.shuffle(truth)
    noisy: set[int] = set()
    if split in _LABELLED_SPLITS:
        noisy = set(rng.sample(range(size), round(size * spec.label_noise)))
    writer = _ReviewWriter(spec, domain, rng)
    rows = []
    for i, positive in enumerate(truth):
        text = writer.write(positive)
        label: str | None = None
        if split in _LABELLED_SPLITS:
            observed = positive != (i in noisy)
            label = POSITIVE if observed else NEGATIVE
        rows.append({"id": f"{domain.name}-{split}-{i:05d}", "text": text, "label": label,
                     "domain": domain.name})
    return rows


def generate(corpus: str, split: str, domains: Iterable[str] | None = None) -> list[dict]:
    """Rows ``{"id", "text", "label", "domain"}`` of one split, all domains by default.

    ``label`` is ``"negative"``/``"positive"``, or ``None`` in ``unlabeled``.
    Rows come domain by domain, in the order the domains are asked for.
    """
    spec = _check_corpus(corpus)
    if split not in spec.split_sizes:
        raise ValueError(f"unknown split {split!r} of built-in corpus {corpus!r}; "
                         f"valid: {', '.join(spec.split_sizes)}")
    names = tuple(spec.domains) if domains is None else tuple(domains)
    unknown = [name for name in names if name not in spec.domains]
    if unknown:
        raise ValueError(f"unknown domain(s) {', '.join(map(repr, unknown))} of built-in corpus "
                         f"{corpus!r}; valid: {', '.join(spec.domains)}")
    rows: list[dict] = []
    for name in names:
        rows.extend(_generate_domain(spec, spec.domains[name], split))
    return rows


def write_jsonl(rows: Sequence[dict], path: Path) -> str:
    """Writes rows atomically and returns their sha256.

    Atomic so that an interrupted run, or two processes materialising the
    same split, never leave a truncated file that a later run would trust.
    """
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_text(path, text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def materialize(corpus: str, split: str, cache_dir: Path) -> Path:
    """Path of ``<cache_dir>/builtin/<corpus>-<VERSION>/<split>.jsonl``, written if missing.

    The file holds all domains; the version in the directory name means a
    generator change never reuses a stale cache.
    """
    if split not in splits(corpus):
        raise ValueError(f"unknown split {split!r} of built-in corpus {corpus!r}; "
                         f"valid: {', '.join(splits(corpus))}")
    path = Path(cache_dir) / "builtin" / f"{corpus}-{VERSION}" / f"{split}.jsonl"
    if not path.exists():
        write_jsonl(generate(corpus, split), path)
    return path
