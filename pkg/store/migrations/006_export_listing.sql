-- Operators' view of exports (issue 17).

-- Records the DPS writer refused for an export (they stay queued); kept with the export so that
-- `tracker exports` can show them beside the rows that went.
ALTER TABLE dps_exports ADD COLUMN refused_rows integer NOT NULL DEFAULT 0;

-- `tracker exports` lists the newest exports first, over a recent window.
CREATE INDEX dps_exports_created_at_idx ON dps_exports (created_at DESC);
