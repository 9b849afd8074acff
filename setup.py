"""Build the Cython hot path of spidi_core.

``SPIDI_CYTHON_ANNOTATE=1`` writes the HTML annotation next to each .pyx;
``SPIDI_CYTHON_TRACE=1`` builds with line tracing for profilers.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

TRACE = os.environ.get("SPIDI_CYTHON_TRACE") == "1"
macros = [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")] if TRACE else []

extensions = [
    Extension("spidi_core._frames_c", ["spidi_core/_frames_c.pyx"], define_macros=macros),
    Extension("spidi_core._wheel_c", ["spidi_core/_wheel_c.pyx"], define_macros=macros),
    Extension("spidi_core._lane_c", ["spidi_core/_lane_c.pyx"], define_macros=macros),
    Extension("spidi_core._ws_c", ["spidi_core/_ws_c.pyx"], define_macros=macros),
    Extension("spidi_core._io_phase_c", ["spidi_core/_io_phase_c.pyx"], define_macros=macros),
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        annotate=os.environ.get("SPIDI_CYTHON_ANNOTATE") == "1",
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "linetrace": TRACE,
        },
    ),
)
