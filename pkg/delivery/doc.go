// Package delivery is the sender's core: it takes one dps.export.ready batch and hands its file to the
// DPS mailbox through MESH exactly once in effect, whatever crashes, redeliveries or replicas do.
//
// It owns the export's sending lifecycle in Postgres (the per-export lock, the attempt ledger, the
// created → accepted | failed transitions, releasing a failed export's records) and the ack decision for
// the batch. It must not build files (the producer does), poll MESH tracking after acceptance (the
// tracker does), or publish events directly: every event goes through the transactional outbox.
package delivery
