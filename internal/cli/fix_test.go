package cli

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hmci/hm/internal/errs"
)

// The CLI writes the fix line from a typed error's class and fields; the messages are the
// backend's, unchanged.
func TestPrintErrorFix(t *testing.T) {
	pullErr := errors.New("connection refused")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"docker image",
			&errs.ImageError{Ref: "app:1", Backend: "docker", Where: errs.InDocker, Class: errs.ErrImageNotFound, Err: pullErr, Msg: "image \"app:1\" is not in the Docker daemon"},
			"error[image_not_found]: image \"app:1\" is not in the Docker daemon\n" +
				"  fix    make it available to the Docker daemon (`docker load -i FILE.tar`, or `docker import ROOTFS.tar app:1`), or substitute a local image with --map-image app:1=LOCAL_IMAGE\n"},
		{"store, pull failed, wrapped by the scheduler",
			fmt.Errorf("step 'a': %w", &errs.ImageError{Ref: "app:1", Backend: "sandbox", Where: errs.InStore, Class: errs.ErrImageNotFound, Err: pullErr, Msg: "image \"app:1\" is not in the image store and could not be pulled"}),
			"error[image_not_found]: image \"app:1\" is not in the image store and could not be pulled\n" +
				"  fix    import it with `hm image import FILE app:1` (rootfs, docker save or OCI layout tarball), or run on the host's filesystem with the image `host` (--map-image app:1=host)\n"},
		{"store, no pull",
			&errs.ImageError{Ref: "app:1", Where: errs.InStore, Class: errs.ErrImageNotFound, Msg: "image \"app:1\" is not in the image store"},
			"error[image_not_found]: image \"app:1\" is not in the image store\n" +
				"  fix    import it with `hm image import FILE app:1`, pull it with `hm image pull app:1` when a registry answers, or run on the host's filesystem with the image `host`\n"},
		{"nowhere auto looked",
			&errs.ImageError{Ref: "app:1", Backend: "auto", Where: errs.InDocker + "," + errs.InStore, Class: errs.ErrImageNotFound, Err: pullErr, Msg: "image \"app:1\" is in neither the Docker daemon nor the sandbox's image store and could not be pulled"},
			"error[image_not_found]: image \"app:1\" is in neither the Docker daemon nor the sandbox's image store and could not be pulled\n" +
				"  fix    import it with `hm image import FILE app:1` (sandbox) or `docker load -i FILE.tar` (docker), or substitute an image you have with --map-image app:1=IMAGE\n"},
		{"host image on docker",
			&errs.ImageError{Ref: "host", Backend: "docker", Where: errs.InDocker, Class: errs.ErrInvalid, Msg: "the image `host` is the host's root filesystem, which the docker backend cannot run"},
			"error[image_not_found]: the image `host` is the host's root filesystem, which the docker backend cannot run\n" +
				"  fix    run it with --backend sandbox (as root) or --backend host, or give docker an image with --map-image host=IMAGE\n"},
		{"registry lacks it",
			&errs.ImageError{Ref: "app:1", Where: errs.InRegistry, Class: errs.ErrImageNotFound, Err: pullErr, Msg: "the registry does not have image \"app:1\""},
			"error[image_not_found]: the registry does not have image \"app:1\"\n" +
				"  fix    check the reference and your registry login, or import the image with `hm image import FILE app:1`\n"},
		{"registry unreachable",
			&errs.ImageError{Ref: "app:1", Where: errs.InRegistry, Class: errs.ErrUnavailable, Err: pullErr, Msg: "pulling image \"app:1\": connection refused"},
			"error[registry_unavailable]: pulling image \"app:1\": connection refused\n" +
				"  fix    import the image with `hm image import FILE app:1` (docker save or OCI layout tarball), or use the image `host`\n"},
		{"no docker daemon",
			&errs.UnavailableError{Backend: "docker", Address: "unix:///x.sock", Msg: "no Docker daemon answers at unix:///x.sock"},
			"error[docker_unavailable]: no Docker daemon answers at unix:///x.sock\n" +
				"  fix    start dockerd (or Docker Desktop), check DOCKER_HOST and that you may use its socket, or use --backend sandbox/host\n"},
		{"no docker client",
			&errs.UnavailableError{Backend: "docker", Msg: "cannot set up a Docker client: bad host"},
			"error[docker_unavailable]: cannot set up a Docker client: bad host\n" +
				"  fix    check DOCKER_HOST and the DOCKER_* variables, or use --backend sandbox/host\n"},
		{"no sandbox",
			fmt.Errorf("reconcile sandbox backend: %w", &errs.UnavailableError{Backend: "sandbox", Msg: "the sandbox backend needs root"}),
			"error[sandbox_unavailable]: the sandbox backend needs root\n" +
				"  fix    run as root, or use --backend docker / host\n"},
		{"no slirp4netns",
			fmt.Errorf("step 'a' could not run: %w", &errs.UnavailableError{Backend: "sandbox", Missing: "slirp4netns", Msg: "the sandbox's private network needs slirp4netns, which is not installed"}),
			"error[sandbox_unavailable]: the sandbox's private network needs slirp4netns, which is not installed\n" +
				"  fix    install slirp4netns (Debian: apt-get install slirp4netns) for the sandbox's private network, or choose --network none (loopback only) or --network host\n"},
		{"host cache_dirs without root",
			&errs.UnavailableError{Backend: "host", Missing: "root", Msg: "cache_dirs on the host backend need root"},
			"error[host_unavailable]: cache_dirs on the host backend need root\n" +
				"  fix    run hm as root (cache_dirs on the host backend are bind mounts), or use --backend docker / sandbox\n"},
		{"runner",
			&errs.RunnerError{Step: "a", Runner: "docker", Backend: "sandbox"},
			"error[runner_mismatch]: step 'a' names runner \"docker\", but this build runs every step on the sandbox backend\n" +
				"  fix    run it with --backend docker, or remove the step's runner\n"},
		{"artifacts too large",
			fmt.Errorf("step 'a' could not run: %w", &errs.ArtifactLimitError{Msg: "its artifacts exceed a step's bounds (10000 files, 4 GiB): more than 10000 files"}),
			"error[artifacts_too_large]: its artifacts exceed a step's bounds (10000 files, 4 GiB): more than 10000 files\n" +
				"  fix    narrow the step's artifacts patterns, or pack the files into one archive in the step and name that\n"},
		{"remote step, a code with its fix",
			&errs.RemoteStepError{Step: "a", JobCode: "job_invalid", Msg: "the IR does not load"},
			"error[job_invalid]: step 'a' could not run: the IR does not load\n" +
				"  fix    the server cannot load this build's pipeline any more: check its IR with `hm render` and submit it again\n"},
		{"remote step, another code",
			&errs.RemoteStepError{Step: "a", JobCode: "agent_error", Msg: "commit: no space left on device"},
			"error[agent_error]: step 'a' could not run: commit: no space left on device\n" +
				"  fix    see the step's log above, and the log of the agent that ran it on its machine\n"},
		{"already for a person",
			errs.New(errs.ErrUsage, "usage", "write -e KEY=VALUE", "invalid -e %q", "x"),
			"error[usage]: invalid -e \"x\"\n  fix    write -e KEY=VALUE\n"},
		{"plain",
			fmt.Errorf("docker: run: %w: %w", errs.ErrInfra, errors.New("EOF")),
			"error[internal]: docker: run: infrastructure error: EOF\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			printError(&buf, tt.err)
			if diff := cmp.Diff(tt.want, buf.String()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if got, want := errs.ExitCode(withFix(tt.err)), errs.ExitCode(tt.err); got != want {
				t.Errorf("exit code %d with the fix, %d without", got, want)
			}
		})
	}
}
