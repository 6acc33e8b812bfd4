package frontend

import (
	"fmt"
	"io"
	"os"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/frontend/yamlfe"
	"github.com/hmci/hm/internal/ir"
)

// ReadFile reads a pipeline file of format "yaml" or "ir" (JSON), refusing one larger than
// that format's bound without reading it all: a 50 MB file costs no more than the bound.
func ReadFile(path, format string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Read(f, path, format)
}

// Read is ReadFile from r (stdin); name names it in the error.
func Read(r io.Reader, name, format string) ([]byte, error) {
	max := int64(ir.MaxBytes)
	if format == "yaml" {
		max = yamlfe.MaxBytes
	}
	data, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, &errs.LimitError{Format: format, File: name, Limit: errs.LimitSize, Max: max,
			Msg: fmt.Sprintf("the file is larger than the %s (%d bytes) hm reads", sizeText(max), max)}
	}
	return data, nil
}

func sizeText(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d KiB", n>>10)
}
