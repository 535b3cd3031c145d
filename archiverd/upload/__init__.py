"""Upload: spool -> destination -> journal, on a wall-clock schedule.

`queue.UploadQueue` is the part of the journal the uploader uses, `uploader.Uploader` does
one pass (oldest first, idempotent, retried), `schedule.UploadSchedule` says when and
`schedule.UploadLoop` runs passes at those times, or at once on a flush request.
"""
