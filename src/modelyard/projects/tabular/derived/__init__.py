"""Derived columns: new columns computed from a source table before filtering, as the schema's
``derive`` section lists them.

:mod:`.columns` applies the derivations and holds the generic operations (``regex``, ``ratio``,
``copy``, ``concat``); :mod:`.parsers` is the registry of named domain parsers a derivation's
``op`` may also name; domain code lives in its own module (:mod:`.danish_address`).
"""
