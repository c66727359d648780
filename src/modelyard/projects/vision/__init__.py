"""Image-folder classification (one folder per class): decoding, indexing, splitting, caching."""
