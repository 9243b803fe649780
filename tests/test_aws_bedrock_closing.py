import pytest

from esl_app.providers.agent.bedrock import _CLOSING


@pytest.mark.parametrize("text,closing", [
    ("Thank you for calling. Goodbye!", True),
    ("You're all set. Have a great day.", True),
    ("Bye now.", True),
    ("Goodbye", True),
    ("Would you like to say goodbye to the front desk first?", False),
    ("I have 9 AM or 10 AM. Which would you like?", False),
])
def test_model_goodbye_ends_the_call(text, closing):
    assert bool(_CLOSING.search(text)) is closing
