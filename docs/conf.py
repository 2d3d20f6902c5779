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
# wide enough for the code's 100-character lines at 1280 px; alabaster goes fluid on phones
html_theme_options = {"page_width": "1240px", "sidebar_width": "230px"}

# examples run by the doctest builder (sphinx -b doctest) see the public names
doctest_global_setup = "from backend import *"

# docs/_static/custom.css (alabaster loads it): wide tables and code scroll, never cut
html_static_path = ["_static"]
