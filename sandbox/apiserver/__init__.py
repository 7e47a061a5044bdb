"""The HTTP side: the Kubernetes REST API as kubectl and the official client call it. Routing and
the verbs (api.py, paths.py, responses.py), logs, metrics and watches (reads.py), discovery and
the OpenAPI documents, server-side Table printing (tables.py, the cells of a row in rows.py), the
protobuf requests kubectl sends, and what writes meet beyond storage (policy.py: eviction, access
reviews, the slow-write test hook)."""
