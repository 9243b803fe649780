"""The compiled per-frame media path (esl_app/media/_fastpath.c); the rest is setup.cfg.

``optional``: without a C compiler the install still succeeds and the media path runs
its pure-Python twin (esl_app/media/endpoint.py, esl_app/media/server.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("esl_app.media._fastpath", ["esl_app/media/_fastpath.c"],
                             optional=True, extra_compile_args=["-O2", "-ffp-contract=off"])])
