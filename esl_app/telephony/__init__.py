"""The call engine: outbound ESL server, hardened session, per-call controller, verbs.

``server.EslServer`` accepts FreeSWITCH's outbound socket connections; each runs a
``call.CallController`` over an ``esl.EslSession``; media actions are the cancellable
verbs of ``verbs``; ``audio`` plugs the mod_audio_fork path in; ``records`` stores calls.
"""
