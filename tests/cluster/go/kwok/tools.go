//go:build tools

// Package tools pins the kwok controller for tests/cluster/build.py.
package tools

import (
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
