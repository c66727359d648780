"""Pipeline stages: fetch -> prepare -> train -> evaluate -> export; each a plain ``run``."""
