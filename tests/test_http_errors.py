"""Scheduling errors map to HTTP statuses by their nearest known class."""

from __future__ import annotations

import falcon
import falcon.testing

from esl_app.http.app import _scheduling_error
from esl_app.scheduling.errors import SchedulingError, TooLate


def test_a_change_inside_the_cancel_window_is_409_not_503():
    """TooLate (a NotAllowed) fell through the exact-type lookup to 503."""
    class Late:
        def on_delete(self, req, resp):
            raise TooLate("changes within 24 hours go to the front desk")

    app = falcon.App()
    app.add_error_handler(SchedulingError, _scheduling_error)
    app.add_route("/x", Late())
    r = falcon.testing.TestClient(app).simulate_delete("/x")
    assert r.status_code == 409
    assert r.json == {"error": "changes within 24 hours go to the front desk"}
