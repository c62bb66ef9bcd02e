"""Real data -> reward tables: dataset loaders, embedding models, retrievers, relevance scoring.

Layering (imports point down): ``table_builder`` (build a reward table) uses ``datasets`` (loaders that
read published formats from a path), ``retrievers`` (dense retrieval over cached embeddings, BM25)
and ``relevance`` (nDCG, reciprocal rank, hit@k). The seams are the protocols in
:mod:`banditroute.data.interfaces`.
"""
