package cli

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/hmci/hm/internal/agent"
	"github.com/hmci/hm/internal/errs"
)

func newAgentCmd(stdio IO) *cobra.Command {
	var url, token, backend, state, network string
	var slots int
	var labels []string
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run steps of an hm server's builds on this machine's VM backend",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if token == "" {
				token = os.Getenv("HM_AGENT_TOKEN")
			}
			for _, l := range labels {
				if !strings.Contains(l, "=") {
					return errs.New(errs.ErrUsage, "usage", "give labels as --labels k=v", "label %q is not k=v", l)
				}
			}
			return runAgent(c.Context(), stdio, agent.Config{Server: url, Token: token, StateDir: state, Slots: slots, Labels: labels},
				backend, vmOptions{network: network})
		},
	}
	cmd.Flags().StringVar(&url, "server", "", "the hm server's base URL")
	cmd.Flags().StringVar(&token, "token", "", "an agent token (hm server token create --agent); default $HM_AGENT_TOKEN")
	cmd.Flags().StringVar(&backend, "backend", "sandbox", "the VM backend that runs steps: sandbox, docker or host")
	cmd.Flags().StringVar(&state, "state", "", "the agent's state dir: its id, sources, images and snapshots")
	cmd.Flags().StringVar(&network, "network", "private", "the steps' network: private, none or host")
	cmd.Flags().IntVar(&slots, "slots", 1, "steps run at once")
	cmd.Flags().StringSliceVar(&labels, "labels", nil, "labels k=v that steps may require (repeatable)")
	cmd.MarkFlagRequired("server")
	cmd.MarkFlagRequired("state")
	return cmd
}

// runAgent runs until SIGTERM or SIGINT, which drain it (no new claims; running steps finish
// and report); a second signal kills the running steps, whose leases then lapse.
func runAgent(ctx context.Context, stdio IO, cfg agent.Config, backend string, o vmOptions) error {
	if backend != "sandbox" && backend != "docker" && backend != "host" {
		return errs.New(errs.ErrUsage, "usage", "use --backend sandbox, docker or host", "unknown agent backend %q", backend)
	}
	if err := checkStateDir(cfg.StateDir); err != nil {
		return err
	}
	b, err := openVM(ctx, backend, cfg.StateDir, o)
	if err != nil {
		return err
	}
	defer closeVM(b)
	cfg.Backend = b
	cfg.Logger = slog.New(slog.NewTextHandler(stdio.Err, nil))
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	ctx, kill := context.WithCancel(ctx)
	defer kill()
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	go func() {
		select {
		case <-sig:
		case <-ctx.Done():
			return
		}
		cfg.Logger.Info("hm agent draining: no new steps; a second signal stops running ones")
		a.Drain()
		select {
		case <-sig:
			kill()
		case <-ctx.Done():
		}
	}()
	err = a.Run(ctx)
	if err != nil && errors.Is(err, agent.ErrAuth) {
		return errs.New(errs.ErrUnavailable, "auth", "give an agent token: hm server token create --agent", "%v", err)
	}
	return err
}
