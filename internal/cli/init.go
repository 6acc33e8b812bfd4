package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hmci/hm/internal/errs"
	"github.com/hmci/hm/internal/frontend"
)

func newInitCmd(stdio IO) *cobra.Command {
	var dir, template string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a starter pipeline, .hm/pipeline.yaml",
		Long: fmt.Sprintf(`Write a starter pipeline to <dir>/.hm/pipeline.yaml, ready for hm run.
Templates: %s. Without --template, hm picks one from the files present (go.mod: go,
package.json: node, Cargo.toml: rust, pyproject.toml/setup.py/requirements.txt: python), else
minimal. The pipeline is named (slug:) after the directory. An existing .hm/pipeline.yaml is
never overwritten.`, strings.Join(frontend.Templates(), ", ")),
		Args: usageArgs(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error {
			if !c.Flags().Changed("template") {
				template = frontend.DetectTemplate(dir)
			}
			data, err := frontend.Template(template)
			if err != nil {
				return err
			}
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				return usage("point -d/--dir at an existing directory", "directory %s does not exist", dir)
			}
			slug := frontend.SlugFor(dir)
			data = frontend.WithSlug(data, slug)
			path := filepath.Join(dir, ".hm", "pipeline.yaml")
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return usage("check that the directory is writable", "cannot create %s: %v", filepath.Dir(path), err)
			}
			// O_EXCL: refuse to overwrite, also when another process creates the file meanwhile.
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if os.IsExist(err) {
				return errs.New(errs.ErrUsage, "init_exists",
					fmt.Sprintf("edit %s, or remove it and run hm init again", path),
					"%s already exists; hm init does not overwrite it", path)
			}
			if err != nil {
				return usage("check that the directory is writable", "cannot create %s: %v", path, err)
			}
			if _, err := f.Write(data); err != nil {
				f.Close()
				return fmt.Errorf("write %s: %w: %w", path, errs.ErrInfra, err)
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("write %s: %w: %w", path, errs.ErrInfra, err)
			}
			fmt.Fprintf(stdio.Out, "wrote %s (pipeline %s, template %s)\nrun it with: hm run", path, slug, template)
			if dir != "." {
				fmt.Fprintf(stdio.Out, " -d %s", dir)
			}
			fmt.Fprintln(stdio.Out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&dir, "dir", "d", ".", "project directory")
	cmd.Flags().StringVarP(&template, "template", "t", "minimal", strings.Join(frontend.Templates(), ", "))
	return cmd
}
