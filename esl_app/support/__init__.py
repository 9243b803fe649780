"""Leaf helpers every layer may use; they import nothing else of ivr.

bridge (the one place asyncio and OS threads meet the gevent hub), sockets (the 503
refusal shared by the HTTP and media servers), logmask (log privacy).
"""
