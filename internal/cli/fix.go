package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/hmci/hm/internal/errs"
)

// printError writes err as `error[code]: message` and, where this CLI knows what to do, a
// `  fix    …` line. Backends and the image store return classes and fields
// (errs.ImageError, errs.UnavailableError), never advice: the flags and commands named here
// exist only in this CLI.
func printError(w io.Writer, err error) {
	errs.Print(w, withFix(err))
}

// withFix returns err as an *errs.Error with this CLI's fix when err is one of the typed
// engine errors; any other error unchanged.
func withFix(err error) error {
	var e *errs.Error
	if errors.As(err, &e) {
		return err // already meant for a person
	}
	var ie *errs.ImageError
	if errors.As(err, &ie) {
		return &errs.Error{Code: ie.Code(), Msg: ie.Msg, Fix: imageFix(ie), Exit: errs.ExitCode(err), Err: err}
	}
	var re *errs.RunnerError
	if errors.As(err, &re) {
		return &errs.Error{Code: re.Code(), Msg: re.Error(), Exit: errs.ExitCode(err), Err: err,
			Fix: fmt.Sprintf("run it with --backend %s, or remove the step's runner", re.Runner)}
	}
	var se *errs.StateDirError
	if errors.As(err, &se) {
		return &errs.Error{Code: se.Code(), Msg: se.Error(), Exit: errs.ExitUnavailable, Err: err,
			Fix: "set HM_STATE_DIR to a writable directory with free space (hm keeps snapshots and the cache there)"}
	}
	var ue *errs.UnavailableError
	if errors.As(err, &ue) {
		return &errs.Error{Code: ue.Code(), Msg: ue.Msg, Fix: unavailableFix(ue), Exit: errs.ExitCode(err), Err: err}
	}
	return err
}

func imageFix(e *errs.ImageError) string {
	ref := e.Ref
	switch {
	case e.Backend == "docker" && ref == HostImage:
		return "run it with --backend sandbox (as root) or --backend host, or give docker an image with --map-image host=IMAGE"
	case e.Backend == "auto": // looked for in every backend auto could use
		return "import it with `hm image import FILE " + ref + "` (sandbox) or `docker load -i FILE.tar` (docker), " +
			"or substitute an image you have with --map-image " + ref + "=IMAGE"
	case e.Where == errs.InDocker:
		return fmt.Sprintf("make it available to the Docker daemon (`docker load -i FILE.tar`, or `docker import ROOTFS.tar %s`), "+
			"or substitute a local image with --map-image %s=LOCAL_IMAGE", ref, ref)
	case e.Where == errs.InRegistry && errors.Is(e.Class, errs.ErrUnavailable):
		return "import the image with `hm image import FILE " + ref + "` (docker save or OCI layout tarball), or use the image `host`"
	case e.Where == errs.InRegistry:
		return "check the reference and your registry login, or import the image with `hm image import FILE " + ref + "`"
	case e.Where == errs.InStore && e.Err != nil: // a pull was tried and failed
		return "import it with `hm image import FILE " + ref + "` (rootfs, docker save or OCI layout tarball), " +
			"or run on the host's filesystem with the image `host` (--map-image " + ref + "=host)"
	case e.Where == errs.InStore:
		return "import it with `hm image import FILE " + ref + "`, pull it with `hm image pull " + ref +
			"` when a registry answers, or run on the host's filesystem with the image `host`"
	}
	return ""
}

func unavailableFix(e *errs.UnavailableError) string {
	switch {
	case e.Backend == "docker" && e.Address == "":
		return "check DOCKER_HOST and the DOCKER_* variables, or use --backend sandbox/host"
	case e.Backend == "docker":
		return "start dockerd (or Docker Desktop), check DOCKER_HOST and that you may use its socket, or use --backend sandbox/host"
	case e.Backend == "sandbox" && e.Missing == "slirp4netns":
		return "install slirp4netns (Debian: apt-get install slirp4netns) for the sandbox's private network, " +
			"or choose --network none (loopback only) or --network host"
	case e.Backend == "sandbox":
		return "run as root, or use --backend docker / host"
	}
	return "use another --backend (auto, docker, sandbox or host)"
}
