// Package demodata creates realistic, deterministic source data for the pipeline: the
// reference data (programmes and vaccines with their real SNOMED codes and terms), a
// fixed world of teams, schools, clinics, vaccinators and batches, and patients and
// vaccination records in bulk with COPY. It also adds single, exactly specified records
// for other packages' tests.
//
// It writes only the source tables (and dps_pending_records, as the queue trigger
// would). It must not touch the export state, and every NHS number it makes is in the
// 999 test range, so its output can never be mistaken for a real patient's.
package demodata
