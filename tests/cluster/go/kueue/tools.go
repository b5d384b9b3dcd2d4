//go:build tools

// Package tools pins the Kueue manager for tests/cluster/build.py.
package tools

import (
	_ "sigs.k8s.io/kueue/cmd/kueue"
)
