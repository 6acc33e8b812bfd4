// Package main is a tiny Go program for hm's example pipeline.
package main

import (
	"fmt"
	"os"
	"strings"
)

// Greeting greets name, or the world when name is blank.
func Greeting(name string) string {
	name = strings.TrimSpace(name)
	if name == "" {
		name = "world"
	}
	return fmt.Sprintf("hello, %s", name)
}

func main() {
	fmt.Println(Greeting(strings.Join(os.Args[1:], " ")))
}
