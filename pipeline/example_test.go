package pipeline_test

import (
	"fmt"
	"os"
	"time"

	"github.com/hmci/hm/pipeline"
)

func Example() {
	toolchain := pipeline.Sh("toolchain", "make tools").Cache(pipeline.Forever())
	p := pipeline.New("ci",
		toolchain.Fork(
			pipeline.Sh("test", "make test").Timeout(10*time.Minute),
			pipeline.Sh("lint", "make lint"),
		),
		pipeline.Wait(),
		pipeline.Sh("report", "echo done"),
	).Env("CI", "true")
	if err := p.Render(os.Stdout, pipeline.WithOrg("acme")); err != nil {
		fmt.Println(err)
	}
	// Output:
	// {
	//   "version": "0",
	//   "graph": {
	//     "nodes": [
	//       {
	//         "step": {
	//           "key": "toolchain",
	//           "cmd": "make tools",
	//           "cache": {
	//             "policy": "forever",
	//             "key": "2d8b5341522d45d561d95f4b3d70922fa0754838b308861b9a27fa6145aac811"
	//           }
	//         },
	//         "env": {
	//           "CI": "true"
	//         }
	//       },
	//       {
	//         "step": {
	//           "key": "test",
	//           "cmd": "make test",
	//           "timeout_seconds": 600
	//         },
	//         "env": {
	//           "CI": "true"
	//         }
	//       },
	//       {
	//         "step": {
	//           "key": "lint",
	//           "cmd": "make lint"
	//         },
	//         "env": {
	//           "CI": "true"
	//         }
	//       },
	//       {
	//         "step": {
	//           "key": "report",
	//           "cmd": "echo done"
	//         },
	//         "env": {
	//           "CI": "true"
	//         }
	//       }
	//     ],
	//     "node_holes": [],
	//     "edge_property": "directed",
	//     "edges": [
	//       [0, 1, "builds_in"],
	//       [0, 2, "builds_in"],
	//       [0, 3, "depends_on"],
	//       [1, 3, "depends_on"],
	//       [2, 3, "depends_on"]
	//     ]
	//   }
	// }
}
