package docker

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
)

// TestMain fails the package when its tests, together, left a container of this process (its
// own owner, or a dead owner a test faked with its PID) in the daemon: the leak checks of
// single tests do not see what a test's other backends kept.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if left := leftByThisProcess(); len(left) > 0 {
			fmt.Fprintf(os.Stderr, "containers left by the tests:\n  %s\n", strings.Join(left, "\n  "))
			code = 1
		}
	}
	os.Exit(code)
}

func leftByThisProcess() []string {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil
	}
	defer cli.Close()
	cs, err := cli.ContainerList(context.Background(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", LabelOwner))})
	if err != nil {
		return nil // no daemon: the tests that need one skipped or failed already
	}
	var out []string
	for _, c := range cs {
		if strings.HasPrefix(c.Labels[LabelOwner], strconv.Itoa(os.Getpid())+"-") {
			out = append(out, fmt.Sprintf("%.12s %s (step %q, state %s)", c.ID, c.Names, c.Labels[LabelStep], c.Labels[LabelState]))
		}
	}
	return out
}
