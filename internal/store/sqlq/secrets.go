package sqlq

// Sealed build secrets (store.BuildSecrets).
const (
	// build
	GetBuildSecrets = `SELECT sealed FROM build_secrets WHERE build_id = ?`
	// build
	DeleteBuildSecrets = `DELETE FROM build_secrets WHERE build_id = ?`
	// The secrets of builds in a terminal state.
	DeleteEndedBuildSecrets = `DELETE FROM build_secrets
			WHERE build_id IN (SELECT id FROM builds WHERE state IN ('passed', 'failed', 'canceled'))`
)

// ScanBytes reads a row of one BLOB or BYTEA column.
func ScanBytes(r Scanner) ([]byte, error) {
	var b []byte
	return b, r.Scan(&b)
}
