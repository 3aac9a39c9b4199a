-- A dead letter's file_path names a quarantined file only when ingestd moved
-- that file into _quarantine/ for it, or for an earlier failure of the same
-- event that an operator replayed (consumers/dead_letter.py). Before this,
-- file_path was taken from the event, which may name any quarantined file:
-- rows whose quarantined path was only named by their event, and not moved
-- for their event, lose it here (the event column keeps what it named), so
-- that `dlq discard --delete-file` and `dlq replay` cannot act on another dead
-- letter's file.
WITH RECURSIVE owned AS (
    SELECT id, event_id, file_path
      FROM ops.dead_letters
     WHERE file_path LIKE '\_quarantine/%'
       AND file_path IS DISTINCT FROM event->>'path'
    UNION
    SELECT d.id, d.event_id, d.file_path
      FROM ops.dead_letters d
      JOIN owned o ON d.event_id = o.event_id AND d.file_path = o.file_path AND d.id > o.id
)
UPDATE ops.dead_letters
   SET file_path = NULL
 WHERE file_path LIKE '\_quarantine/%'
   AND id NOT IN (SELECT id FROM owned);
