// Command hm runs CI pipelines: see `hm --help`.
package main

import (
	"context"
	"os"

	"github.com/hmci/hm/internal/cli"
)

func main() {
	os.Exit(cli.Main(context.Background(), os.Args[1:], cli.IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}))
}
