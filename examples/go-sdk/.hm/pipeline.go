// The fan-out / fan-in pipeline of ../../fan-out/.hm/pipeline.yaml, written with hm's Go SDK.
// hm runs this main package with `go run` (see `hm pipelines -d examples/go-sdk`); it renders
// the same IR as the YAML, byte for byte.
package main

import (
	"fmt"
	"time"

	"github.com/hmci/hm/pipeline"
)

func main() {
	prepare := pipeline.Sh("prepare",
		`mkdir -p tools && printf '#!/bin/sh\nwc -w < "$1" | tr -d " "\n' > tools/count && chmod +x tools/count`).
		Label("prepare the tools").Cache(pipeline.Forever())
	var shards []pipeline.Item
	var after []pipeline.Step
	for i, words := range []int{5, 6, 5} {
		n := i + 1
		shard := pipeline.Sh(fmt.Sprintf("shard-%d", n),
			fmt.Sprintf(`test "$(tools/count data/part-%d.txt)" = %d && echo "shard %d: %d words"`, n, words, n, words))
		shards = append(shards, shard)
		after = append(after, shard)
	}
	pipeline.Main(pipeline.New("pipeline",
		prepare.Fork(shards...),
		pipeline.Sh("total", `cat data/*.txt | wc -w | tr -d ' ' | grep -x 16 && echo "all shards passed"`).After(after...),
	).DefaultImage("host").Timeout(5 * time.Minute))
}
