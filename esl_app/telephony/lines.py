"""What the call engine itself says, apart from the agent: every line in one place.

The agent words the conversation; these are the engine's own lines, spoken when there
is no agent to ask (an unknown number, a failed agent, silence, a transfer, the time
limit). One table, so that wording is reviewed together and a tenant language can
later pick another table.
"""

from __future__ import annotations

REJECT_TEXT = "We're sorry, this number is not in service. Goodbye."
TROUBLE_TEXT = "I'm sorry, I'm having trouble right now."
FILLER_TEXT = "One moment while I check."
CANT_HEAR = "I'm sorry, I'm having trouble hearing you."
NOTHING_HEARD = "Sorry, I didn't hear anything."  # followed by the last question again
STILL_THERE = "Are you still there? You can also press zero to reach our staff."
HOLD = "Please hold while I transfer you."
NOBODY_AVAILABLE = "I'm sorry, no one is available to take your call right now. Goodbye."
NOBODY_ANSWERED = ("I'm sorry, no one can take your call right now. Please call again later. "
                   "Goodbye.")
GOODBYE = "Thank you for calling. Goodbye."
NOT_NEEDED = "Hello, this is {clinic}. Sorry, this call is no longer needed. Goodbye."
