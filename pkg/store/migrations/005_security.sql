-- Security audit (issue 13).

-- An outbox row the stream can never take (invalid against its schema, over the size limit) is set
-- aside with the reason, and a dead letter says so, instead of holding up every row after it.
ALTER TABLE dps_outbox ADD COLUMN set_aside_at timestamptz;
DROP INDEX dps_outbox_unpublished_idx;
CREATE INDEX dps_outbox_unpublished_idx ON dps_outbox (id) WHERE published_at IS NULL AND set_aside_at IS NULL;

-- The schedule's requests, one per programme and day. Only the producer that inserts the row publishes
-- the request (through the outbox, in the same transaction), under a request id nobody can guess, so a
-- request published first under a predictable id cannot stand in for the night's export.
CREATE TABLE dps_scheduled_requests (
    programme       text NOT NULL,
    run_date        date NOT NULL,        -- Europe/London
    request_id      text NOT NULL UNIQUE,
    fired_at        timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (programme, run_date)
);

-- When the export's file was deleted from the Object Store (DPS_OBJECT_RETENTION after acknowledgement,
-- or once a failed export no longer needs it).
ALTER TABLE dps_exports ADD COLUMN object_deleted_at timestamptz;
CREATE INDEX dps_exports_object_retention_idx ON dps_exports (status, acknowledged_at, failed_at)
    WHERE object_deleted_at IS NULL AND object_name IS NOT NULL;
