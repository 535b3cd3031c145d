"""The way back: `archiverd ls` and `archiverd get`, usable years later without the daemon.

Pipeline, one module per stage::

    query (what the user asked: filters, times, day partitions)
      -> listing (list only the needed partitions, HEAD only when a metadata filter needs it)
      -> fetch (parallel download, verify + decrypt into temp files, rename when verified)
      -> records (Docker JSON / CRI / plain lines: --grep, --text, time-ordered merge)
      -> output (ls table or JSON lines, progress on a terminal)

Only the `Destination` protocol is used, so read permissions (GetObject, ListBucket,
ListBucketVersions) suffice, against ``s3://`` and ``file://`` alike.
"""
