-- Export state owned by the pipeline.

-- A record is a candidate for the next export of its programme while it sits here. A trigger on the
-- recording application's table puts it here whenever it is inserted or changed, and a failed export
-- puts its records back. Exports take candidates out in the same transaction that links them, so
-- "what is unsent for programme P" is an index scan over this small table, not over every record.
-- queue_seq changes every time a record is queued again: an export deletes a candidate only if its
-- queue_seq is still the one it read, so a change committed while the export runs is never lost.
CREATE SEQUENCE dps_pending_records_queue_seq;
CREATE TABLE dps_pending_records (
    vaccination_record_id   bigint PRIMARY KEY REFERENCES vaccination_records (id),
    programme_id            bigint NOT NULL REFERENCES programmes (id),
    queue_seq               bigint NOT NULL DEFAULT nextval('dps_pending_records_queue_seq'),
    queued_at               timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dps_pending_records_programme_idx ON dps_pending_records (programme_id, vaccination_record_id);

CREATE FUNCTION dps_queue_vaccination_record() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dps_pending_records (vaccination_record_id, programme_id)
    VALUES (NEW.id, NEW.programme_id)
    ON CONFLICT (vaccination_record_id) DO UPDATE
        SET programme_id = EXCLUDED.programme_id, queue_seq = EXCLUDED.queue_seq, queued_at = EXCLUDED.queued_at;
    RETURN NULL;
END;
$$;

CREATE TRIGGER vaccination_records_dps_queue
    AFTER INSERT OR UPDATE ON vaccination_records
    FOR EACH ROW EXECUTE FUNCTION dps_queue_vaccination_record();

CREATE TABLE dps_export_requests (
    request_id      text PRIMARY KEY,
    programme       text NOT NULL,            -- a programme code, or ALL
    requested_by    text NOT NULL,
    requested_at    timestamptz NOT NULL,
    dry_run         boolean NOT NULL DEFAULT false,
    received_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dps_exports (
    id                  uuid PRIMARY KEY,
    programme_id        bigint NOT NULL REFERENCES programmes (id),
    request_id          text REFERENCES dps_export_requests (request_id),
    filename            text NOT NULL,
    status              text NOT NULL DEFAULT 'created'
                            CHECK (status IN ('created', 'accepted', 'acknowledged', 'failed')),
    row_count           integer NOT NULL DEFAULT 0,
    object_name         text,             -- Object Store name in bucket dps-exports, once stored
    size_bytes          bigint,
    sha256              text,
    ready_published_at  timestamptz,      -- outbox: set once dps.export.ready is acknowledged by the stream
    mesh_message_id     text,
    mesh_local_id       text,
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    last_error_code     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    acknowledged_at     timestamptz,
    failed_at           timestamptz,
    -- tracker bookkeeping
    next_track_at       timestamptz,
    track_failures      integer NOT NULL DEFAULT 0,
    tracking_unknown_since timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX dps_exports_request_programme_key ON dps_exports (request_id, programme_id) WHERE request_id IS NOT NULL;
CREATE INDEX dps_exports_status_idx ON dps_exports (status, next_track_at);
CREATE INDEX dps_exports_unpublished_idx ON dps_exports (created_at) WHERE ready_published_at IS NULL AND status = 'created';
CREATE UNIQUE INDEX dps_exports_mesh_message_key ON dps_exports (mesh_message_id) WHERE mesh_message_id IS NOT NULL;

-- The exact record versions an export carried, and the action flag each went out with.
-- record_updated_at is the version: a record changed after it went out has a later updated_at.
CREATE TABLE dps_export_records (
    export_id               uuid NOT NULL REFERENCES dps_exports (id),
    vaccination_record_id   bigint NOT NULL REFERENCES vaccination_records (id),
    record_updated_at       timestamptz NOT NULL,
    action                  text NOT NULL CHECK (action IN ('new', 'update', 'delete')),
    PRIMARY KEY (export_id, vaccination_record_id)
);
CREATE INDEX dps_export_records_record_idx ON dps_export_records (vaccination_record_id, export_id);

-- Every attempt to hand an export to MESH, recorded before the send starts so that after a crash the
-- sender can ask MESH about each one by its local id (<export id>.<attempt>).
CREATE TABLE dps_export_attempts (
    export_id       uuid NOT NULL REFERENCES dps_exports (id),
    attempt         integer NOT NULL CHECK (attempt > 0),
    local_id        text NOT NULL UNIQUE,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    outcome         text CHECK (outcome IN ('accepted', 'adopted', 'not_sent', 'transient_error', 'permanent_error')),
    mesh_message_id text,
    error           text,
    PRIMARY KEY (export_id, attempt)
);
