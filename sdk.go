// Package hm carries the source of hm's Go SDK so that the hm binary can serve it: a
// repository outside this module cannot `go get github.com/hmci/hm/pipeline` (the module is
// not published), so hm writes this copy to disk and points `go run` of .hm/*.go at it
// (internal/sdk). It is not an API; programs import github.com/hmci/hm/pipeline.
//
// The embed lives here, at the module root, because go:embed cannot reach into a parent
// directory: embedding the files the binary was built from, rather than a generated copy,
// means the served SDK cannot drift from the one hm renders its own examples with.
package hm

import "embed"

// SDKSource is package pipeline and the packages it imports from this module, tests
// included (internal/sdk drops them), plus go.mod for its go directive. sdk_test.go checks
// that the list matches `go list -deps ./pipeline`.
//
//go:embed go.mod pipeline/*.go internal/cachekey/*.go internal/errs/*.go internal/ir/*.go
var SDKSource embed.FS
