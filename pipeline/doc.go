// Package pipeline is hm's Go SDK: an immutable, fluent builder for pipelines that renders
// hm's pipeline IR (spec/ir-v0.md), in the spirit of BuildKit's llb.
//
// Every value (Step, Group, Barrier, Cache, Pipeline) is immutable: a method returns a
// modified copy and never changes its receiver, so a value can be shared and reused freely.
//
//	toolchain := pipeline.Sh("toolchain", "make tools").Cache(pipeline.Forever())
//	test := toolchain.Sh("test", "make test").Timeout(10 * time.Minute) // builds in toolchain
//	lint := toolchain.Sh("lint", "make lint")                           // a second child: a fork
//	p := pipeline.New("ci",
//		test, lint,
//		pipeline.Wait().ContinueOnFailure(true),
//		pipeline.Sh("notify", "echo done"),
//	).Env("CI", "true")
//	ir, err := p.IR()
//
// Lineage: s.Sh(key, cmd) is a child step that starts from s's committed snapshot (a
// builds_in edge); s.Fork(children...) attaches several root steps (or groups) as children of
// s, which reads like the nested `steps:` of the YAML front end. After adds ordering-only
// (depends_on) edges, Wait a barrier between everything before it and everything after it.
//
// Node order in the IR: the items given to New are walked in order; a step is preceded by its
// ancestors, a group by its head, and each step appears once (at its first mention). Two
// different steps with the same key are an error. This is the same order in which the YAML
// front end lists a pipeline's steps (depth first, document order), so a YAML pipeline and its
// Go twin render byte-identical IR.
//
// Cache keys are computed at render time, exactly as the harmont DSLs do
// (spec/cache-keys.md): org from HM_PIPELINE_ORG (or WithOrg), on_change paths relative to
// the working directory (or WithDir), ttl buckets from the current time (or WithNow).
//
// A `.hm/` directory holding a Go main package is a pipeline source for hm: hm runs it with
// `go run` and reads the pipelines it prints. Its main function calls Main:
//
//	func main() { pipeline.Main(ci(), release()) }
package pipeline
