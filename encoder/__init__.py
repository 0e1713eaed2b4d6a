"""Audio → 160-dim frames → contrastive Transformer → 128-d moment embeddings."""
