"""archiverd: archive container logs to a versioned S3 bucket, encrypted, exactly once."""

from __future__ import annotations

__version__ = "0.1.0"
