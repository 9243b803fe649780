"""Contractions spelled out, the one table the local NLU and emergency detection share.

A recogniser writes "can't", "cant" or "can not" for the same words; both the local
agent's understanding (``local/nlu/``) and red-flag detection (``safety.py``) look for
the spelled-out form ("do not", "i am having"). The apostrophe-less forms listed are
only those that are not also ordinary words ("its", "ill", "well", "were" are absent).
"""

from __future__ import annotations

__all__ = ["CONTRACTIONS", "expand"]

CONTRACTIONS: dict[str, str] = {
    "aren't": "are not", "can't": "can not", "cannot": "can not", "couldn't": "could not",
    "didn't": "did not", "doesn't": "does not", "don't": "do not", "hadn't": "had not",
    "hasn't": "has not", "haven't": "have not", "isn't": "is not", "shouldn't": "should not",
    "wasn't": "was not", "weren't": "were not", "won't": "will not", "wouldn't": "would not",
    "he's": "he is", "how's": "how is", "it's": "it is", "name's": "name is",
    "she's": "she is", "that's": "that is", "there's": "there is", "what's": "what is",
    "where's": "where is", "who's": "who is", "whoever's": "whoever is",
    "i'm": "i am", "you're": "you are", "we're": "we are", "they're": "they are",
    "i've": "i have", "you've": "you have", "we've": "we have",
    "i'd": "i would", "it'd": "it would", "that'd": "that would",
    "i'll": "i will", "you'll": "you will", "we'll": "we will", "that'll": "that will",
    "let's": "let us",
    # without the apostrophe, as recognisers and typists write them
    "cant": "can not", "didnt": "did not", "doesnt": "does not", "dont": "do not",
    "isnt": "is not", "wont": "will not", "im": "i am",
}


def expand(word: str) -> str:
    """``word`` (lower case, no surrounding punctuation) spelled out, or itself."""
    return CONTRACTIONS.get(word, word)
