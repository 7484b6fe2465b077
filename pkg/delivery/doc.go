// Package delivery is the sender's core: it takes one dps.export.ready batch and hands its file to the
// DPS mailbox through MESH exactly once in effect, whatever crashes, redeliveries or replicas do.
//
// It owns the per-export lock, the attempt ledger (dps_export_attempts) and the decision of what
// becomes of a batch; it moves an export created → accepted | failed through pkg/lifecycle, which owns
// the statuses, their SQL and the release of a failed export's records. Its consumer is a handler run by
// pkg/runner. It must not build files (the producer does), poll MESH tracking after acceptance (the
// tracker does), or publish events directly: every event goes through the transactional outbox.
package delivery
