"""Model wrappers: captioners, text and image embedders, text-to-image. Never imports analysis."""
