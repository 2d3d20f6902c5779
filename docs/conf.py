"""Sphinx configuration for docker-job-manager."""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "docker-job-manager"
author = "docker-job-manager developers"
copyright = "2026, docker-job-manager developers"
release = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.graphviz",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]

# Google-style docstrings
napoleon_google_docstring = True
napoleon_numpy_docstring = False

autodoc_member_order = "bysource"
graphviz_output_format = "svg"

exclude_patterns = ["_build"]
html_theme = "alabaster"

# examples run by the doctest builder (sphinx -b doctest) see the public names
doctest_global_setup = "from backend import *"
