//go:build tools

// Package tools pins the etcd server for tests/cluster/build.py.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
