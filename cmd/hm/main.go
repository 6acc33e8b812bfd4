// Command hm runs CI pipelines: see `hm --help`.
package main

import (
	"context"
	"os"

	"github.com/hmci/hm/internal/cli"
	"github.com/hmci/hm/internal/vm/sandbox"
)

func main() {
	// Re-executed as a sandbox's init, hm becomes that init and never returns here.
	sandbox.MaybeInit()
	deferFirstGC()
	os.Exit(cli.Main(context.Background(), os.Args[1:], cli.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}))
}
