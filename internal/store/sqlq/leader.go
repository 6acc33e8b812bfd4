package sqlq

import "github.com/hmci/hm/internal/store"

// AcquireLeader is the whole election: one upsert that takes a free or lapsed lease, renews
// the owner's own, and changes nothing when another owner's is live (no row returned). On
// PostgreSQL it is atomic under concurrent replicas too: ON CONFLICT takes the row lock and
// re-checks the WHERE against the committed row. Parameters: name, owner, expiry, now, now.
const AcquireLeader = `INSERT INTO leader_leases (name, owner, expires, epoch) VALUES (?, ?, ?, 1)
	ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires = excluded.expires,
		epoch = CASE WHEN leader_leases.owner = excluded.owner AND leader_leases.expires >= ?
			THEN leader_leases.epoch ELSE leader_leases.epoch + 1 END
	WHERE leader_leases.owner = excluded.owner OR leader_leases.expires < ?
	RETURNING epoch`

// ReleaseLeader: name, owner, epoch.
const ReleaseLeader = `UPDATE leader_leases SET owner = '', expires = 0 WHERE name = ? AND owner = ? AND epoch = ?`

// JobCounts is the queue and what runs, by state; the terminal states are left out so that
// the count stays over the live rows whatever the history. Rows for ScanStateCount.
const JobCounts = `SELECT state, COUNT(*) FROM jobs
	WHERE state IN ('pending', 'scheduled', 'assigned', 'running', 'canceling', 'timing_out') GROUP BY state`

// StateCount is a row of JobCounts.
type StateCount struct {
	State store.JobState
	N     int64
}

// ScanStateCount reads a row of JobCounts.
func ScanStateCount(r Scanner) (StateCount, error) {
	var v StateCount
	return v, r.Scan(&v.State, &v.N)
}
