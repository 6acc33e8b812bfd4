package cli

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/imagestore"
	"github.com/hmci/hm/internal/ir"
	"github.com/hmci/hm/internal/vm"
	"github.com/hmci/hm/internal/vm/docker"
	"github.com/hmci/hm/internal/vm/host"
	"github.com/hmci/hm/internal/vm/sandbox"
)

// localResolver is the ability of a backend to say whether it has an image without pulling
// it: auto prefers a backend that has every image over one that would have to pull.
type localResolver interface {
	ResolveLocal(ctx context.Context, ref string) (string, error)
}

// rootImages are the distinct images the root steps start from, after --map-image, in node
// order: the only images a build needs (children start from their parent's snapshot).
func rootImages(p *ir.Pipeline, mapImage map[string]string) []string {
	child := make([]bool, len(p.Nodes))
	for _, e := range p.Edges {
		if e.Kind == ir.BuildsIn {
			child[e.To] = true
		}
	}
	var out []string
	for i := range p.Nodes {
		if child[i] {
			continue
		}
		img := p.Image(i)
		if to, ok := mapImage[img]; ok {
			img = to
		}
		if !slices.Contains(out, img) {
			out = append(out, img)
		}
	}
	return out
}

// chooseVM opens the backend a build runs on and makes sure it has the root images before
// anything runs, so that a missing image is one error (exit 4) rather than a failed step
// reported three times. notice is the one stderr line about the choice ("" for none).
//
// settle is called once, before any image is resolved and before any error of chooseVM's own
// is returned (the state dir's check, which runs beside opening the backend): its error is
// returned instead, and the backend closed.
func chooseVM(ctx context.Context, name, stateDir string, o vmOptions, images []string, settle func() error) (_ vm.Backend, notice string, _ error) {
	if name == "auto" {
		if err := settle(); err != nil {
			return nil, "", err
		}
		return chooseAuto(ctx, stateDir, o, images)
	}
	if name == "docker" && slices.Contains(images, HostImage) {
		if err := settle(); err != nil {
			return nil, "", err
		}
		// Known before anything starts: the pipeline asks for what docker cannot be.
		return nil, "", &errs.ImageError{Ref: HostImage, Backend: "docker", Where: errs.InDocker, Class: errs.ErrInvalid,
			Msg: "the image `host` is the host's root filesystem, which the docker backend cannot run"}
	}
	b, err := openVM(ctx, name, stateDir, o)
	if serr := settle(); serr != nil {
		if err == nil {
			closeVM(b)
		}
		return nil, "", serr
	}
	if err != nil {
		return nil, "", err
	}
	for _, ref := range images {
		if _, err := b.ResolveImage(ctx, ref); err != nil {
			closeVM(b)
			return nil, "", err
		}
	}
	if b.Name() == "host" {
		notice = hostWarning
	}
	return b, notice, nil
}

// chooseAuto tries the isolating backends in order (docker, sandbox): the first that has
// every root image locally, else the first that can pull them; with neither backend usable
// here, the host backend, and the warning says why.
func chooseAuto(ctx context.Context, stateDir string, o vmOptions, images []string) (chosen vm.Backend, notice string, _ error) {
	var cands []vm.Backend
	var absent []string // why a backend is not a candidate, for the notice
	defer func() {
		for _, c := range cands {
			if c != chosen {
				closeVM(c) // the sandbox keeps a spare init, docker a connection
			}
		}
	}()
	if slices.Contains(images, HostImage) {
		absent = append(absent, "docker cannot run the `host` image")
	} else {
		do := o.docker(stateDir)
		do.PingTimeout = 2 * time.Second
		b, err := docker.New(ctx, do)
		switch {
		case err == nil:
			cands = append(cands, b)
		case errors.Is(err, errs.ErrUnavailable):
			absent = append(absent, dockerAbsence(err))
		default:
			return nil, "", err
		}
	}
	b, err := sandbox.New(stateDir, imagestore.Open(stateDir), o.sandbox())
	var ue *errs.UnavailableError
	var needs error // the sandbox could run here but lacks a program
	switch {
	case err == nil:
		cands = append(cands, b)
	case errors.As(err, &ue) && ue.Missing != "":
		absent, needs = append(absent, ue.Msg), err
	case errors.Is(err, errs.ErrUnavailable):
		absent = append(absent, "not root, so no sandbox")
	default:
		return nil, "", err
	}
	// Falling back to no isolation is for a machine where no isolating backend can work,
	// never because a program the sandbox needs is not installed: that is said instead.
	if len(cands) == 0 && needs != nil {
		return nil, "", needs
	}
	if len(cands) == 0 {
		return host.New(stateDir), hostWarning + " (--backend auto: " + strings.Join(absent, "; ") + ")", nil
	}

	// First pass: no pulls. Note what each candidate lacks, for the notice and the pull pass.
	missing := make([][]string, len(cands))
	for i, c := range cands {
		for _, ref := range images {
			if _, err := c.(localResolver).ResolveLocal(ctx, ref); errors.Is(err, errs.ErrImageNotFound) {
				missing[i] = append(missing[i], ref)
			} else if err != nil {
				return nil, "", err
			}
		}
		if len(missing[i]) == 0 {
			why := plural(images) + " in " + storeOf(c.Name())
			if slices.Equal(images, []string{HostImage}) {
				why = "the image `host` is the host's root filesystem, which the sandbox runs read-only"
			}
			return c, autoNotice(c.Name(), why, cands[:i], missing, absent), nil
		}
	}
	// Second pass: the first candidate that can pull what it lacks.
	var failures []string
	var first *errs.ImageError
	for i, c := range cands {
		var err error
		for _, ref := range missing[i] {
			if _, err = c.ResolveImage(ctx, ref); err != nil {
				break
			}
		}
		if err == nil {
			return c, autoNotice(c.Name(), "pulled "+names(missing[i])+" into "+storeOf(c.Name()), cands[:i], missing, absent), nil
		}
		var ie *errs.ImageError
		if !errors.As(err, &ie) {
			return nil, "", err
		}
		if first == nil {
			first = ie
		}
		failures = append(failures, c.Name()+": "+err.Error())
	}
	var where []string
	for _, c := range cands {
		where = append(where, map[string]string{"docker": errs.InDocker, "sandbox": errs.InStore}[c.Name()])
	}
	return nil, "", &errs.ImageError{Ref: first.Ref, Backend: "auto", Where: strings.Join(where, ","),
		Class: errs.ErrImageNotFound, Err: first.Err,
		Msg: fmt.Sprintf("image %q is %s and could not be pulled (%s)", first.Ref, notIn(cands), strings.Join(failures, "; "))}
}

// autoNotice is the line saying which backend auto chose and why the earlier ones were not.
func autoNotice(name, why string, earlier []vm.Backend, missing [][]string, absent []string) string {
	var not []string
	for i, c := range earlier {
		if len(missing[i]) == 1 {
			not = append(not, c.Name()+" has no such image")
		} else {
			not = append(not, c.Name()+" lacks "+strings.Join(missing[i], ", "))
		}
	}
	not = append(not, absent...)
	line := "hm: backend " + name + ": " + why
	if len(not) > 0 {
		line += " (" + strings.Join(not, "; ") + ")"
	}
	return line
}

func names(images []string) string {
	if len(images) == 1 {
		return "image " + images[0]
	}
	return "images " + strings.Join(images, ", ")
}

func plural(images []string) string {
	if len(images) == 1 {
		return names(images) + " is"
	}
	return names(images) + " are"
}

func storeOf(backend string) string {
	if backend == "docker" {
		return "the Docker daemon"
	}
	return "the sandbox's image store"
}

// notIn says where auto looked: "not in A", "in neither A nor B".
func notIn(cands []vm.Backend) string {
	if len(cands) == 1 {
		return "not in " + storeOf(cands[0].Name())
	}
	return "in neither " + storeOf(cands[0].Name()) + " nor " + storeOf(cands[1].Name())
}

// dockerAbsence says in a few words why docker is not a candidate.
func dockerAbsence(err error) string {
	var ue *errs.UnavailableError
	if errors.As(err, &ue) && ue.Address != "" {
		return "no Docker daemon answers at " + ue.Address
	}
	return "no Docker client (check DOCKER_HOST)"
}
