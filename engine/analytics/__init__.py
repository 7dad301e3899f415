"""Opt-in search analytics: the query and event log, its report, and weights learnt from clicks."""
