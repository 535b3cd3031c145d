"""The SQLite journal (WAL) in ``state.dir``: streams, their files and offsets, segments and
their state (``open → sealed → packed → uploaded``), committed before each side effect."""
