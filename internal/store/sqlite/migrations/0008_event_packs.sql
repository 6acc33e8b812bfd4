-- Schema 8: a build_events row holds n_events consecutive events from seq, their payloads
-- joined by newlines (store.EventPack): a big log's step_log events cost a row per batch of
-- an append, not a row each. Rows written before hold one event each.
ALTER TABLE build_events ADD COLUMN n_events INTEGER NOT NULL DEFAULT 1;
