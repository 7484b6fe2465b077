// Package store owns the pipeline's Postgres schema and connections: the embedded SQL
// migrations (applied with tern under its advisory lock), connecting with a pinged pool,
// and creating the target database when it is missing.
//
// It must not know about NATS, MESH or the DPS file format, and it never logs or returns
// a connection password.
package store
