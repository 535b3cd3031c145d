"""What archived bytes look like: record boundaries of the log formats (`records`) and the
object key and metadata names of a segment in the bucket (`layout`), shared by the sealer and
restore."""
