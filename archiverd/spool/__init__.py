"""The spool: packed segments kept durably in ``state.dir/spool/`` until uploaded."""
