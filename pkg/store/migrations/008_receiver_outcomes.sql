-- What happens to an export after MESH: the MESH non-delivery reports and the receiver's acknowledgement
-- files (InfAck: the whole file; BusAck: row by row) that arrive in our MESH inbox, and each record's
-- outcome at the receiver.

-- The lifecycle grows past "acknowledged" (downloaded): received (InfAck Success), processed (BusAck),
-- and rejected (InfAck Failure: the whole file refused; its records are released, as for failed).
ALTER TABLE dps_exports DROP CONSTRAINT dps_exports_status_check;
ALTER TABLE dps_exports ADD CONSTRAINT dps_exports_status_check
    CHECK (status IN ('created', 'accepted', 'acknowledged', 'received', 'processed', 'failed', 'rejected'));
ALTER TABLE dps_exports
    ADD COLUMN received_at          timestamptz,
    ADD COLUMN processed_at         timestamptz,
    ADD COLUMN rejected_at          timestamptz,
    ADD COLUMN rows_accepted        integer,      -- from the BusAck
    ADD COLUMN rows_refused         integer,
    ADD COLUMN receiver_code        text,         -- the InfAck's RESPONSE_CODE (20013 Success, 10002 Failure)
    ADD COLUMN receiver_display     text,         -- the InfAck's RESPONSE_DISPLAY
    ADD COLUMN infack_message_id    text,         -- the MESH messages that carried the replies
    ADD COLUMN busack_message_id    text,
    ADD COLUMN report_message_id    text;         -- a MESH non-delivery report
CREATE INDEX dps_exports_filename_idx ON dps_exports (filename);

-- Each record's outcome at the receiver, on the link that carried it: accepted, or refused with the
-- receiver's diagnostic. NULL until the export's BusAck arrives.
ALTER TABLE dps_export_records
    ADD COLUMN outcome          text CHECK (outcome IN ('accepted', 'refused')),
    ADD COLUMN response_code    text,             -- the BusAck row's RESPONSE_CODE (30002 refused)
    ADD COLUMN diagnostic       text,             -- OPERATION_OUTCOME, patient identifiers masked
    ADD COLUMN outcome_at       timestamptz;
CREATE INDEX dps_export_records_refused_idx ON dps_export_records (outcome_at) WHERE outcome = 'refused';

-- Every message our MESH inbox has shown us, so that each is handled exactly once across replicas and
-- crashes: a replica locks the row (FOR UPDATE SKIP LOCKED) while it downloads and applies the message,
-- commits state 'applied' with the effect, and only then acknowledges it in MESH ('acknowledged'). A
-- crash before the commit leaves the row 'new' (applied by whoever comes next); a crash after it leaves
-- 'applied' (only the MESH acknowledgement is repeated). 'held' is a message nobody could apply: it
-- stays unacknowledged in MESH, is dead-lettered once per reason, and is looked at again each pass.
CREATE TABLE dps_inbox_messages (
    mesh_message_id     text PRIMARY KEY,
    seq                 bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- an inbox dead letter's stream_seq
    state               text NOT NULL DEFAULT 'new' CHECK (state IN ('new', 'applied', 'acknowledged', 'held')),
    kind                text CHECK (kind IN ('report', 'infack', 'busack', 'busack_summary', 'unknown')),
    message_type        text,                     -- mex-MessageType: DATA or REPORT
    sender              text,                     -- mex-From
    file_name           text,                     -- mex-FileName
    local_id            text,                     -- mex-LocalID
    linked_message_id   text,                     -- mex-LinkedMsgID (reports)
    export_id           uuid REFERENCES dps_exports (id),
    effect              text,                     -- what applying it did, in words
    held_reason         text,
    dead_lettered_reason text,                    -- the reason last dead-lettered, so each is reported once
    seen_count          integer NOT NULL DEFAULT 0,
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    applied_at          timestamptz,
    acknowledged_at     timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dps_inbox_messages_export_idx ON dps_inbox_messages (export_id) WHERE export_id IS NOT NULL;
CREATE INDEX dps_inbox_messages_state_idx ON dps_inbox_messages (state) WHERE state <> 'acknowledged';
