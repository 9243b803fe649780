"""One contraction table: the local NLU and emergency detection spell out the same words."""

from __future__ import annotations

import pytest

from esl_app.providers.agent import safety
from esl_app.providers.agent.contractions import CONTRACTIONS
from esl_app.providers.agent.local import nlu


@pytest.mark.parametrize("word", sorted(CONTRACTIONS))
def test_both_normalisers_expand_every_contraction(word):
    spoken = word.replace("'", "\u2019").upper()  # a recogniser's curly quote, any case
    assert nlu.normalize(spoken) == CONTRACTIONS[word]
    assert safety.normalize(spoken) == CONTRACTIONS[word]


def test_apostrophe_less_forms_are_never_ordinary_words():
    assert not {"its", "ill", "well", "were", "id", "hes", "shes", "lets"} & set(CONTRACTIONS)
