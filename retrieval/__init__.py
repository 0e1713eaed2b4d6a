"""Library ingestion, pgvector search with filters, harmonic + diversity reranking."""
