-- Schema 12: a log_chunks row holds n_chunks consecutive chunks from seq (store.ChunkPack):
-- an agent's batch costs a row per run of up to 1000 chunks, not a row each. A row of one
-- chunk is as before (content its bytes), so rows written before read unchanged; a row of
-- several holds them in content in store.EncodeChunks' form.
ALTER TABLE log_chunks ADD COLUMN n_chunks INTEGER NOT NULL DEFAULT 1;
