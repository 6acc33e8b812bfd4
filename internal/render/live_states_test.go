package render

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Spinner frames and elapsed times change while a step runs; the goldens hold them as * and <t>.
var (
	spinnerFrame = regexp.MustCompile(`[\x{2800}-\x{28FF}]`)
	elapsed      = regexp.MustCompile(`\b\d+(ms|\.\ds|m\d\ds)\b`)
)

func normalize(screen string) string {
	return elapsed.ReplaceAllString(spinnerFrame.ReplaceAllString(screen, "*"), "<t>")
}

// The live view in each state of a build, on a real pseudo-terminal, against a golden screen:
// steps waiting for a slot are listed as queued; a running step shows its last RunningTail log
// lines (escape sequences and control characters dropped); once the build has failed, the
// failed step's tail names the command that prints its whole log.
func TestLiveViewStatesGolden(t *testing.T) {
	p := startPTYHelper(t, "hint", 80, 24)
	golden := func(state string) string { return filepath.Join("testdata", "live", state+".golden") }

	p.send(buildStart(3, 3), queued("a", "build", "", "make build"), started("a"),
		queued("b", "test", "", "make test"), queued("c", "lint", "", "make lint"))
	got := p.scr.waitFor(t, "queued steps", false, func(s string) bool {
		return hasLine(`^· lint  make lint  queued$`)(s) && strings.Contains(s, "1 running, 0 of 3 done")
	})
	checkGolden(t, golden("queued"), []byte(normalize(got)))

	for i := 1; i <= 6; i++ {
		p.send(logLine("a", fmt.Sprintf("compiling unit %d", i)))
	}
	p.send(logLine("a", "\x1b[31mwarning:\x1b[0m\tunused\r"))
	got = p.scr.waitFor(t, "the running step's last lines", false, func(s string) bool {
		// The whole frame, up to the status line: a screen read mid-draw has only its top.
		return hasLine(`warning: unused$`)(s) && !strings.Contains(s, "unit 2") &&
			hasLine(`^· lint  make lint  queued$`)(s) && strings.Contains(s, "1 running, 0 of 3 done")
	})
	checkGolden(t, golden("running"), []byte(normalize(got)))

	p.send(ended("a", 2, 1500), chainFailed("a", "build", 2, "step 'build' failed with exit code 2"),
		skipped("b"), skipped("c"), buildEnd(1, 1600))
	checkGolden(t, golden("failed"), []byte(p.finish(t)))
}
