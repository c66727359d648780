"""Projects: one package per kind of problem; each is the only place that knows its domain."""
