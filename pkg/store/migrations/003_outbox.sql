-- Transactional outbox: a state change and the message announcing it commit together; a relay publishes
-- the message afterwards with its Nats-Msg-Id, so a crash in between ends in one message, never none.
CREATE TABLE dps_outbox (
    id              bigserial PRIMARY KEY,
    subject         text NOT NULL,
    msg_id          text NOT NULL,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text
);
CREATE INDEX dps_outbox_unpublished_idx ON dps_outbox (id) WHERE published_at IS NULL;
