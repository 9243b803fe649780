import logging

import pytest

from esl_app.scheduling.service import _name_matches
from esl_app.support.logmask import PiiFilter, mask_text


@pytest.mark.parametrize("raw,masked", [
    ("caller +1 555 010 1234 booked", "caller …34 booked"),
    ("call me at 555-010-9876", "call me at …76"),
    ("(555) 010.4321", "…21"),
    ("mail john.smith@gmail.com now", "mail j…@gmail.com now"),
    ("code K7M-4Q2 at 09:30 on 2026-11-24", "code K7M-4Q2 at 09:30 on 2026-11-24"),
    ("slot 1234 for tenant t001", "slot 1234 for tenant t001"),
])
def test_mask_text(raw, masked):
    assert mask_text(raw) == masked


def test_filter_masks_args_and_exceptions(caplog):
    log = logging.getLogger("ivr.test.mask")
    handler = logging.StreamHandler()
    handler.addFilter(PiiFilter())
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(self.format(record))

    keep = Keep()
    keep.addFilter(PiiFilter())
    log.addHandler(keep)
    log.setLevel(logging.DEBUG)
    try:
        log.debug("caller %s e-mail %s", "+15550101234", "ann@example.org")
        try:
            raise ValueError("bad phone 555 010 7777")
        except ValueError:
            log.exception("failed for %s", "5550107777")
    finally:
        log.removeHandler(keep)
    text = "\n".join(records)
    assert "5550101234" not in text and "ann@example.org" not in text
    assert "555 010 7777" not in text and "5550107777" not in text
    assert "…34" in text and "a…@example.org" in text


@pytest.mark.parametrize("said,stored,ok", [
    ("John Smith", "John Smith", True),
    ("jon smyth", "John Smith", True),
    ("smith", "John Smith", True),
    ("mary o brien", "Mary O'Brien", True),
    ("catherine johnson", "Katherine Johnson", True),
    ("john jones", "John Smith", False),
    ("peter parker", "Ann Lee", False),
])
def test_fuzzy_name_match(said, stored, ok):
    assert _name_matches(said, stored) is ok


@pytest.mark.parametrize("raw,masked", [
    ("call me on five five five, two two two, three four five six", "call me on …56"),
    ("it's oh one two, three four five, six seven eight nine", "it's …89"),
    ("double five five one two three four nine", "…49"),
    ("555 two two two 3456", "…56"),
    # short runs and ordinary words stay: times, choices, dates
    ("the one at two o'clock", "the one at two o'clock"),
    ("option one two", "option one two"),
    ("I have one two three", "I have one two three"),
    ("on 2026-12-08 at 10 30", "on 2026-12-08 at 10 30"),
])
def test_spoken_numbers_are_masked(raw, masked):
    assert mask_text(raw) == masked


def test_sql_debug_lines_keep_the_query_but_not_its_parameters():
    record = logging.LogRecord("peewee", logging.DEBUG, __file__, 1,
                               ('INSERT INTO "appointment" ("patient_name") VALUES (?)',
                                ["Johnathan Quixote"]), None, None)
    assert PiiFilter().filter(record)
    assert record.getMessage() == ('INSERT INTO "appointment" ("patient_name") VALUES (?) '
                                   "-- 1 parameter(s) not logged")
