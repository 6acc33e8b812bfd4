package sandboxinit

import (
	"os"
	"strconv"
	"sync"
	"time"
)

// TraceEnv names a file that the backend and the init append timestamped events to, for
// finding where a step's time goes (HM_SANDBOX_TRACE=/tmp/t go run ./bench/sandbox). Unset:
// no tracing.
const TraceEnv = "HM_SANDBOX_TRACE"

var trace struct {
	once sync.Once
	f    *os.File
}

// Trace appends "UNIXNANO COOKIE EVENT" to the trace file when TraceEnv is set; cookie
// names the init ("" in the init itself: its own). The init opens the file before it
// pivots away from the host's root.
func Trace(cookie, event string) {
	trace.once.Do(func() {
		if p := os.Getenv(TraceEnv); p != "" {
			trace.f, _ = os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		}
	})
	if trace.f == nil {
		return
	}
	if cookie == "" {
		cookie = os.Getenv("HM_STEP_COOKIE")
	}
	_, _ = trace.f.WriteString(strconv.FormatInt(time.Now().UnixNano(), 10) + " " + cookie + " " + event + "\n")
}
