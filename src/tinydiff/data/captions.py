"""Captions made from class labels, for training and testing text-conditioned models (text.py).

Each class has a few names ("nine", "9"; "a sneaker", "a trainer") and each name is put into a
few sentences. The *training* phrasings are what a model sees in training, a random one per image
and step; the *held-out* phrasings are never seen in training and test whether a model follows
the meaning of a prompt rather than its exact words.
"""

from __future__ import annotations

from ..errors import TinydiffError

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Per class: names with their article ("a ..."), the first one the plain class name.
FASHION = (
    ("a t-shirt", "a top"),
    ("a pair of trousers", "a pair of pants"),
    ("a pullover", "a sweater"),
    ("a dress", "a summer dress"),
    ("a coat", "a jacket"),
    ("a sandal", "an open sandal"),
    ("a shirt", "a button-up shirt"),
    ("a sneaker", "a trainer"),
    ("a bag", "a handbag"),
    ("an ankle boot", "a boot"),
)

DIGIT_TRAIN = (
    "{word}", "{digit}", "the digit {word}", "the digit {digit}", "a handwritten {word}",
    "a handwritten {digit}", "number {digit}", "the number {word}", "digit {digit}",
    "a picture of the digit {word}", "an image of a {digit}", "{word} written in ink",
)  # fmt: skip
DIGIT_HELD_OUT = (
    "a hand-drawn {digit}", "the number {word} written by hand", "a scribbled {word}",
    "draw a {digit}", "the numeral {digit}", "{word}, handwritten",
)  # fmt: skip
FASHION_TRAIN = (
    "{a}", "{name}", "a photo of {a}", "a picture of {a}", "an image of {a}",
    "{a} on a black background", "a product photo of {a}", "a grayscale photo of {a}",
)  # fmt: skip
FASHION_HELD_OUT = ("a small picture showing {a}", "{name} for sale", "a catalogue image of {a}")


def _strip_article(a: str) -> str:
    return a.split(" ", 1)[1]


def phrasings(data_spec: str, held_out: bool = False) -> list[list[str]]:
    """The captions of each class of a dataset (a list per class label, in label order):
    the training phrasings, or the held-out ones."""
    name = str(data_spec).split(":")[0].split("@")[0]
    if name in ("mnist", "digits"):
        templates = DIGIT_HELD_OUT if held_out else DIGIT_TRAIN
        return [[t.format(word=w, digit=d) for t in templates] for d, w in enumerate(DIGITS)]
    if name == "fashion-mnist":
        templates = FASHION_HELD_OUT if held_out else FASHION_TRAIN
        return [[t.format(a=a, name=_strip_article(a)) for a in names for t in templates] for names in FASHION]
    raise TinydiffError(
        f"no captions for {data_spec}: text conditioning knows the classes of mnist, digits and fashion-mnist"
    )
