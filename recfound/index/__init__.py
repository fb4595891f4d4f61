"""Full-catalogue retrieval: embed every catalogue item, index the vectors, search, score.

`embed_catalogue` (embed.py) turns the build's catalogue passages into unit vectors with an
embedder (the model's `Predictor.embedder`, or a baseline's); `CatalogueIndex` (store.py) is
the faiss index over them (exact up to `index.exact_max_items`, HNSW above) with per-query
exclusions; metrics.py scores ranked ids
against targets per row, for bootstrap intervals (recfound.evaluate.bootstrap.RowStats).
"""
