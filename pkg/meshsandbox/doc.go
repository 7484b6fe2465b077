// Package meshsandbox is our MESH API v2 server for tests, local runs and demos.
//
// It behaves like the official NHSDigital/mesh-sandbox (status codes, error bodies,
// headers, chunking, paging, tracking) and adds what the live service does that the
// official one does not (nonce replay and timestamp checks, optional workflow and
// client-certificate checks), plus fault injection and an admin API for tests.
// It keeps everything in memory and must never be used to carry real patient data.
package meshsandbox
