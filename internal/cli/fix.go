package cli

import (
	"errors"
	"fmt"
	"io"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/render"
)

// printError writes err as `error[code]: message` and, where this CLI knows what to do, a
// `  fix    …` line. Backends and the image store return classes and fields
// (errs.ImageError, errs.UnavailableError), never advice: the flags and commands named here
// exist only in this CLI.
func printError(w io.Writer, err error) {
	err = withFix(err)
	var e *errs.Error
	if errors.As(err, &e) { // a message may quote a step key or a file name: nothing reaches the terminal raw
		err = &errs.Error{Code: e.Code, Msg: render.EscapeText(e.Msg), Fix: render.EscapeText(e.Fix), Exit: e.Exit, Err: e.Err}
	}
	errs.Print(w, err)
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
	var ae *errs.ArtifactLimitError
	if errors.As(err, &ae) {
		return &errs.Error{Code: ae.Code(), Msg: ae.Error(), Exit: errs.ExitCode(err), Err: err, Fix: artifactsFix}
	}
	var rse *errs.RemoteStepError
	if errors.As(err, &rse) {
		return &errs.Error{Code: rse.Code(), Msg: rse.Error(), Exit: errs.ExitCode(err), Err: err, Fix: remoteStepFix(rse.JobCode)}
	}
	var le *errs.LimitError
	if errors.As(err, &le) {
		return &errs.Error{Code: le.Code(), Msg: le.Error(), Fix: limitFix(le), Exit: errs.ExitCode(err), Err: err}
	}
	var rme *errs.RemoteError
	if errors.As(err, &rme) {
		msg := rme.Msg
		if rme.RequestID != "" {
			msg += " (request " + rme.RequestID + ")"
		}
		return &errs.Error{Code: rme.Code(), Msg: msg, Fix: remoteFix(rme), Exit: errs.ExitCode(err), Err: err}
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
	case e.Backend == "host" && e.Missing == "root":
		return "run hm as root (cache_dirs on the host backend are bind mounts), or use --backend docker / sandbox"
	}
	return "use another --backend (auto, docker, sandbox or host)"
}

// limitFix says what to do about a pipeline beyond one of hm's bounds (fixed, documented in
// schema/README.md).
const artifactsFix = "narrow the step's artifacts patterns, or pack the files into one archive in the step and name that"

// remoteStepFix is what to do about a remote step that could not run, by its job's
// error_code (the server's and agent's codes).
func remoteStepFix(code string) string {
	switch code {
	case errs.CodeArtifactsTooLarge:
		return artifactsFix
	case "agent_lost":
		return "the agent running it stopped answering (stopped, killed or cut off) and no other took the step over: check that an agent of the step's org, backend and labels is up (hm agent), then run again"
	case "artifacts_invalid":
		return "the agent's artifacts did not reach the server whole: run an hm agent of the server's version and run again"
	case "job_invalid":
		return "the server cannot load this build's pipeline any more: check its IR with `hm render` and submit it again"
	}
	return "see the step's log above, and the log of the agent that ran it on its machine"
}

func limitFix(e *errs.LimitError) string {
	what := "the pipeline"
	if e.Format == "yaml" {
		what = "the YAML file"
	}
	switch e.Limit {
	case errs.LimitSize:
		return fmt.Sprintf("check that %s is the pipeline you meant; split a larger one into several pipelines under .hm/ (the bounds are in schema/README.md)", what)
	case errs.LimitDepth:
		return fmt.Sprintf("flatten the nesting to at most %d levels: a pipeline needs only a few", e.Max)
	case errs.LimitAliases:
		return "use fewer aliases of large anchors, or write the repeated part out where it is needed"
	case errs.LimitEdges:
		return "use fewer steps on each side of a wait barrier, or `after:` / depends_on edges between the steps that need them"
	case errs.LimitEnv:
		return "set fewer environment variables on the pipeline and its steps"
	}
	return "split the pipeline into several pipelines under .hm/"
}
