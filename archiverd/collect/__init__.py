"""Tail and seal: the collector watches each source's streams, reads their files to the end
through every rotation, cuts segments at record boundaries and packs them into the spool.

`collector` owns the loop; `dirty` bridges filesystem events and rescans; `watch` is the
inotify side; `files` holds source files open read-only; `streamfiles` places a stream's files
at their offsets; `tail` reads and seals one stream; `packing` packs sealed segments.
"""
