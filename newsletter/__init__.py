"""An email newsletter pipeline: section files in, one message per subscriber out."""

__version__ = "0.1.0"
