package sqlq

// Shared keys (store.SharedKeys) and blobs held by the store (store.BlobStore).

const (
	// name, fresh value: the first value stored under a name stays.
	PutSharedKey = `INSERT INTO server_keys (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING`
	GetSharedKey = `SELECT value FROM server_keys WHERE name = ?`
)
