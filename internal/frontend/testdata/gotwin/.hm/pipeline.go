// The Go twin of ../../yamltwin/.hm/pipeline.yaml: both must render the same bytes.
package main

import (
	"time"

	"github.com/hmci/hm/pipeline"
)

func main() {
	base := pipeline.Sh("base", "apt-get update").Label("base system").Image("debian:bookworm-slim").
		Cache(pipeline.Forever().EnvKeys("DEBIAN_MIRROR"))
	data := base.Sh("data", "cp data.txt /opt/data.txt").Cache(pipeline.OnChange("data.txt"))
	lint := base.Sh("lint", "make lint")
	docs := pipeline.Sh("docs", "make docs").After(lint)
	pipeline.Main(pipeline.New("twin",
		data.Sh("unit", "make unit").Timeout(5*time.Minute),
		data.Sh("integration", "make integration").Env("LANG", "C"),
		lint,
		docs,
		docs.Sh("publish-docs", "make publish"),
		pipeline.Wait(),
		pipeline.Sh("report", "echo done"),
	).DefaultImage("debian:bookworm").Timeout(20*time.Minute).Env("CI", "true").Env("LANG", "C.UTF-8"))
}
