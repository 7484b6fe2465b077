// Package mesh is the client for the NHS MESH API v2: per-request NHSMESH HMAC authorisation, handshake,
// streaming chunked send with gzip, inbox paging, chunked download, acknowledgement and tracking, with
// typed errors and bounded retries for transient failures.
//
// It owns the wire protocol only. It must not know about NATS, Postgres or exports, must not read the
// environment (the caller builds Config), and must never log the password, the shared key or a token.
package mesh
