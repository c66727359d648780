"""Task-agnostic building blocks: errors, hashing, bundles, configuration, paths."""
