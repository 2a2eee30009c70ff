"""edge-router. Importing the package checks which build it is (router/buildinfo.py):
compiled modules that do not match their sources stop the import."""
from .buildinfo import BUILD, COMPILED

__all__ = ["BUILD", "COMPILED"]
