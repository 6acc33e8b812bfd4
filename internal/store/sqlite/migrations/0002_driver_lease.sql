-- Schema 2: the driver lease of a build. One server replica drives a build at a time (runs
-- its scheduler); it holds the lease until driver_expires and renews it. driver_epoch grows
-- each time the build changes hands, and fenced writes (events) carry it, so a replica that
-- lost the lease cannot append after its successor started.
ALTER TABLE builds ADD COLUMN driver_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE builds ADD COLUMN driver_expires INTEGER NOT NULL DEFAULT 0;
ALTER TABLE builds ADD COLUMN driver_epoch INTEGER NOT NULL DEFAULT 0;
